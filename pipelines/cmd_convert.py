"""``copgen convert``: official ``.pth`` state dicts to copgen checkpoints, and back.

Only wiring: the work is :func:`copgen_core.checkpoints.convert_official` and
:func:`copgen_core.checkpoints.export_official`.
"""

from __future__ import annotations

from pathlib import Path

import click

DTYPES = ("float32", "float16", "bfloat16")


class BadInput(click.ClickException):
    """Bad user input: printed as ``Error: ...`` with exit code 2."""

    exit_code = 2


@click.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["backbone", "vae"]), default="backbone", show_default=True,
              help="What SRC holds.")
@click.option("--preset", type=click.Choice(["tiny", "base", "large", "huge"]), default=None,
              help="Backbone preset the checkpoint was trained with (gives the number of heads).")
@click.option("--num-heads", type=int, default=None, help="Attention heads, if no preset fits.")
@click.option("--modalities", default=None,
              help="Comma-separated modality keys of a backbone trained on a subset (canonical order).")
@click.option("--modality", default=None, help="The modality a VAE serves (required with --kind vae).")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="Store floating weights in this dtype (default: keep the source dtype, bit-exact).")
@click.option("--force", is_flag=True, help="Overwrite an existing DST.")
def command(
    src: Path,
    dst: Path,
    kind: str,
    preset: str | None,
    num_heads: int | None,
    modalities: str | None,
    modality: str | None,
    dtype: str | None,
    force: bool,
) -> None:
    """Convert SRC into DST.

    If SRC is an official state dict (.pth or .safetensors), DST becomes a copgen checkpoint
    directory (model.safetensors + config.json with a sha256 of the weights). If SRC is a copgen
    checkpoint directory, DST becomes an official .pth with the original key order and dtypes.

    \b
    Examples:
      copgen convert 500000_nnet_ema.pth ckpt/base --preset base
      copgen convert model-50-ema.pth ckpt/vae_s2l2a_10m --kind vae --modality s2l2a_10m
      copgen convert ckpt/base 500000_nnet_ema.pth
    """
    import torch

    from copgen_core.checkpoints import (
        CheckpointError,
        convert_official,
        export_official,
        is_copgen_checkpoint,
    )

    if not src.exists():
        raise BadInput(f"{src} does not exist; give an official .pth/.safetensors file or a copgen checkpoint")
    try:
        if is_copgen_checkpoint(src):
            out = export_official(src, dst, overwrite=force)
            click.echo(f"wrote official state dict {out}")
            return
        if src.is_dir():
            raise BadInput(f"{src} is a directory but not a copgen checkpoint (no model.safetensors + config.json)")
        out = convert_official(
            src,
            dst,
            kind="vae" if kind == "vae" else "backbone",
            preset=preset,
            num_heads=num_heads,
            modalities=[m.strip() for m in modalities.split(",")] if modalities else None,
            modality=modality,
            dtype=getattr(torch, dtype) if dtype else None,
            overwrite=force,
        )
    except (CheckpointError, FileExistsError, FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise BadInput(str(message)) from exc
    click.echo(f"wrote copgen {kind} checkpoint {out}")
