"""``copgen demo`` (the README's first command) end to end on the small world, run over a previous run's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.helpers import run_cli

pytestmark = pytest.mark.slow


def test_demo_runs_over_a_previous_runs_outputs_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    demo = out / "demo"
    # what a previous run leaves: cubes that name its STAC API's port (or, here, anything else in their place)
    stale = demo / "preprocess.zarr"
    stale.mkdir(parents=True)
    (stale / "leftover").write_text("from an earlier run")
    (demo / "generate.zarr.report.json").write_text("{}")
    mine = demo / "notes.txt"
    mine.write_text("not the demo's")
    proc = run_cli("demo", "--out", str(out), "--preset", "small", "--model", "random:tiny", "--members", "2",
                   "--steps", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "removing the previous demo's outputs" in proc.stdout
    assert not (stale / "leftover").exists() and (stale / "zarr.json").is_file()  # a cube again
    assert mine.read_text() == "not the demo's"
    for name in ("preprocess", "generate", "seamless"):
        assert list((demo / "quicklook" / name).glob("*.png")), name
    assert list((demo / "quicklook" / "gapfill").rglob("*.png"))
