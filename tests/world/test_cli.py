"""``copgen world``: arguments, exit codes and what it prints."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipelines.cli import main
from tests.world.world_fixtures import SEED, World, small_world


@pytest.fixture(scope="module")
def world() -> World:
    return small_world()


def test_reuses_a_matching_world_and_reports_it(world):
    args = ["world", "--out", str(world.out_dir), "--preset", "small", "--seed", str(SEED)]
    if world.manifest.terramesh:
        args += ["--terramesh", world.manifest.terramesh["dir"]]
    else:
        args += ["--no-terramesh"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "reusing the existing world" in result.output
    assert str(world.out_dir) in result.output
    assert f"{world.manifest.n_items} items" in result.output
    assert "MB" in result.output and "main area: EPSG:" in result.output


@pytest.mark.parametrize("args", [
    ["--preset", "huge"],
    ["--seed", "-1"],
    ["--seed", "abc"],
    ["--terramesh", "/nonexistent/terramesh"],
])
def test_bad_arguments_exit_2(tmp_path, args):
    result = CliRunner().invoke(main, ["world", "--out", str(tmp_path / "w"), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_terramesh_flags_exclude_each_other(tmp_path):
    result = CliRunner().invoke(main, ["world", "--out", str(tmp_path / "w"), "--terramesh", str(tmp_path),
                                       "--no-terramesh"])
    assert result.exit_code == 2
    assert "exclude each other" in result.output


def test_a_folder_that_is_not_terramesh_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["world", "--out", str(tmp_path / "w"), "--preset", "small",
                                       "--terramesh", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a TerraMesh folder" in result.output
