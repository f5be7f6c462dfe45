"""The ``copgen`` command line.

Each subcommand lives in its own ``pipelines/cmd_*.py`` module exposing a click command named
``command``; this module only collects them, so importing the CLI stays cheap (torch, Beam and Dask
load only inside the command that needs them).
"""

from __future__ import annotations

import importlib
import sys

import click

# subcommand name -> module under pipelines/
SUBCOMMANDS: dict[str, str] = {
    "world": "cmd_world",
    "stac": "cmd_stac",
    "check-reference": "cmd_check_reference",
    "convert": "cmd_convert",
    "demo": "cmd_demo",
    "generate": "cmd_generate",
    "preprocess": "cmd_preprocess",
    "quicklook": "cmd_quicklook",
    "train": "cmd_train",
    "train-vae": "cmd_train_vae",
    "gapfill": "cmd_gapfill",
    "seamless": "cmd_seamless",
    "evaluate": "cmd_evaluate",
    "train-bundled": "cmd_train_bundled",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = SUBCOMMANDS.get(cmd_name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(f"pipelines.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pipelines.{module_name}":
                return None
            raise
        command: click.Command = module.command
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="copgen")
def main() -> None:
    """copgen: COP-GEN generation, gap-filling and preprocessing over STAC catalogs into Zarr cubes."""


if __name__ == "__main__":
    sys.exit(main())
