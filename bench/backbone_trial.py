"""One backbone trial: the bundle recipe's `copgen train` settings plus overrides, then the quick static measure.

Backbone options are compared over seeds (run-to-run variation of one recipe reaches 0.07-0.10 in the
static ratio, docs/training.md), so a trial is one command: train a backbone on the latent cache of
`copgen train-bundled --backbone-only` (which also exports the bundle's VAEs), bundle it with those VAEs,
and score it with `bench/static_generation.py`. The shipped bundle is not touched.

    python bench/backbone_trial.py --out out/trials/seed1 --seed 1
    python bench/backbone_trial.py --out out/trials/wide --steps 2000 -- --local-width 96

Arguments after ``--`` are appended to the recipe's (a later option wins in click, so ``--lr 1e-3``
overrides the recipe's rate). Writes ``<out>/static.json`` and prints the measure's summary; a trial
whose ``<out>/bundle.json`` exists is only scored again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.cmd_train_bundled import BACKBONE_STEPS, backbone_arguments  # noqa: E402

WORK = REPO / "out" / "train-bundled"


def main() -> None:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="trial directory (the trained bundle and its scores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=BACKBONE_STEPS)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--work", type=Path, default=WORK, help="train-bundled's work folder (cube, backbone-only cache)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--split", choices=["val", "train"], default="val")
    args = ap.parse_args(argv)
    cube = args.work / "train.zarr"
    cache = args.work / "backbone-only" / "latents.safetensors"
    vaes = args.work / "backbone-only" / "vaes"
    if not cache.is_file() or not vaes.is_dir():
        raise SystemExit(f"no latent cache at {cache}: run `copgen train-bundled --backbone-only` once first")
    if not (args.out / "bundle.json").is_file():
        cmd = [sys.executable, "-m", "pipelines.cli", "train", "--cube", str(cube), "--vae-dir", str(vaes),
               *backbone_arguments(args.steps), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--latent-cache", str(cache), "--out", str(args.out), "--seed", str(args.seed), "--log-every", "250",
               *extra]
        if (args.out / "train_state.pt").is_file():
            cmd.append("--resume")
        rc = subprocess.call(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        if rc != 0:
            raise SystemExit(f"training failed (exit {rc})")
    from bench.static_generation import static_generation

    scores = static_generation(str(args.out), str(cube), str(cache), samples=args.samples, split=args.split)
    (args.out / f"static-{args.split}.json").write_text(json.dumps(scores, indent=1))
    for name in [n for n in scores if n.startswith("static") or n == "unconditional"]:
        r = scores[name]
        assert isinstance(r, dict)
        groups = "  ".join(f"{k.split('_', 1)[1]}: mean {v['mae_mean']:.3f}"
                           + (f" ratio {v['ratio']:.3f}" if "ratio" in v else "")
                           for k, v in r.items() if isinstance(v, dict))
        print(f"{name:>14}: latent std {r['latent_std']:.2f} | {groups}")


if __name__ == "__main__":
    main()
