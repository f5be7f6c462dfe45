"""Session fixtures shared by all tests: local services and the small sample world.

Services start lazily, only when a test asks for them, through the same ``infra/local`` scripts users
run, each on free 127.0.0.1 ports with a private state directory; they stop at the end of the
session, also when tests fail (and, through the scripts' ``--owner-pid`` watchdog, when the session
is killed). Under pytest-xdist every worker has its own session and thus its own services; group
tests that share one with ``@pytest.mark.xdist_group(...)`` to start it once.

Fixtures
--------
``services``
    The :class:`tests.services.ServicePool` (start extra instances: ``services.stac_api(load=dir)``).
``stac_api``
    An empty STAC API (``.url``, ``.load(dir)``) that tests may load their own items into.
``gcs_emulator``
    fake-gcs-server: ``.endpoint``, ``.storage_options``, ``.new_bucket()``, ``.subprocess_env``.
``http_server_factory``
    ``factory(root) -> HttpServer`` (``.url``): Range-capable static server for COGs over HTTP.
``small_world`` / ``small_world_dir``
    ``sampleworld.generate_world(tmp, preset="small")``: its manifest / its output directory.
``stac_api_world``
    A STAC API loaded with the small world. Read-only by convention: do not load into it.
"""

from __future__ import annotations

import os

# Before anything imports gcsfs: otherwise gcsfs probes a gRPC API on the emulator for ~60 s per call.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from tests.services import GcsEmulator, HttpServer, ServicePool, StacApi  # noqa: E402


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServicePool]:
    pool = ServicePool(tmp_path_factory.mktemp("services"))
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session")
def stac_api(services: ServicePool) -> StacApi:
    return services.stac_api()


@pytest.fixture(scope="session")
def gcs_emulator(services: ServicePool) -> GcsEmulator:
    return services.gcs_emulator()


@pytest.fixture(scope="session")
def http_server_factory(services: ServicePool) -> Callable[[Path | str], HttpServer]:
    return services.http_server


def _small_world_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "small-world"


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sampleworld import generate_world

    out = _small_world_path(tmp_path_factory)
    out.mkdir()
    return generate_world(out, preset="small")


@pytest.fixture(scope="session")
def small_world_dir(small_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_world_path(tmp_path_factory)


@pytest.fixture(scope="session")
def stac_api_world(services: ServicePool, small_world: Any, small_world_dir: Path) -> StacApi:
    return services.stac_api(load=small_world_dir)
