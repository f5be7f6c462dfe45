"""`copgen generate` writing to gs:// on a real GCS emulator (fake-gcs-server), with Beam and with Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.pipelines.helpers import run_cli
from transforms import ledger
from transforms.cube import load_spec, read_window

pytestmark = pytest.mark.slow

BBOX = [6.02, 46.07, 6.045, 46.09]


@pytest.fixture(scope="module")
def reference_cube(stac_api_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gcsref") / "local.zarr"
    proc = run_cli("generate", "--stac-url", stac_api_world.url, "--bbox", ",".join(map(str, BBOX)),
                   "--start", "2022-06-21", "--model", "random:tiny", "--members", "2", "--steps", "2",
                   "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("engine", ["beam", "dask"])
def test_generate_to_gcs(engine: str, stac_api_world: Any, gcs_emulator: Any, reference_cube: Path,
                         tmp_path: Path) -> None:
    bucket = gcs_emulator.new_bucket("cube")
    url = f"gs://{bucket}/run/{engine}.zarr"
    cfg = {"stac_url": stac_api_world.url, "bbox": BBOX, "start": "2022-06-21", "model": "random:tiny",
           "members": 2, "steps": 2, "output": url, "storage_options": gcs_emulator.storage_options,
           "engine": engine, "workers": 2, "report": str(tmp_path / "report.json")}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_cli("generate", "--config", str(tmp_path / "job.yaml"), "--quiet", env=gcs_emulator.subprocess_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    so = gcs_emulator.storage_options
    spec = load_spec(url, so)
    done, missing = ledger.completeness(url, spec.planned(), so)
    assert len(done) == 4 and not missing
    for key in (w.key for w in spec.windows):
        ours = read_window(url, key, "S2L2A_B02_B03_B04_B08", 0, so)
        ref = read_window(str(reference_cube), key, "S2L2A_B02_B03_B04_B08", 0)
        np.testing.assert_array_equal(ours, ref)
