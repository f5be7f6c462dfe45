"""Helpers of the gap-fill and seamless end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.paths import REPO
from tests.pipelines.helpers import run_cli

MODULES = {"gapfill": "pipelines.cmd_gapfill", "seamless": "pipelines.cmd_seamless"}


def run_copgen(command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``copgen COMMAND ARGS`` in a fresh process; through the module itself while the CLI does not list it."""
    from pipelines.cli import SUBCOMMANDS

    if command in SUBCOMMANDS:
        return run_cli(command, *args, timeout=timeout)
    env = {**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    return subprocess.run([sys.executable, "-m", MODULES[command], *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
