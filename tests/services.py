"""Local services for tests, started through the same scripts users run (``infra/local/*.sh``).

Every service gets its own state directory and ``--owner-pid`` of the test process, so a test session
that dies without its teardown still takes its services down (the scripts' watchdog notices the
owner is gone within a second). :class:`ServicePool` stops what it started at the end of a session,
and also at interpreter exit as a second line of defence.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.paths import REPO

INFRA = REPO / "infra" / "local"


class ServiceError(RuntimeError):
    """A service script failed; the message carries its exit code and stderr."""


def parse_env(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (as the scripts print them) as a dict; other lines are ignored."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            env[key] = value
    return env


def run_script(script: str, *args: str, timeout_s: float = 180.0) -> dict[str, str]:
    """Run ``infra/local/<script> args...`` and return the env it printed.

    Raises
    ------
    ServiceError
        When the script exits non-zero (the message has its stderr).
    """
    cmd = ["bash", str(INFRA / script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise ServiceError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr.strip()}")
    return parse_env(proc.stdout)


@dataclass
class Service:
    """A running service: its script, state directory and the env its ``start`` printed."""

    script: str
    state: Path
    env: dict[str, str]
    stopped: bool = field(default=False, init=False)

    def status(self) -> bool:
        """True when the service answers (``<script> status`` exits 0)."""
        proc = subprocess.run(["bash", str(INFRA / self.script), "status", "--state", str(self.state)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        return proc.returncode == 0

    def stop(self) -> None:
        if not self.stopped:
            run_script(self.script, "stop", "--state", str(self.state))
            self.stopped = True

    @property
    def pids(self) -> list[int]:
        """Pids named in the env (the server processes and the watchdog)."""
        return [int(v) for k, v in self.env.items() if k.endswith("_PID") and v.isdigit()]


@dataclass
class StacApi(Service):
    """PostgreSQL + pgstac + stac-fastapi-pgstac started by ``stac-api.sh``."""

    @property
    def url(self) -> str:
        return self.env["STAC_API_URL"]

    @property
    def dsn(self) -> str:
        return self.env["PGSTAC_DSN"]

    def load(self, world_dir: Path | str) -> None:
        """Upsert ``world_dir/stac/collections/*.json`` and ``world_dir/stac/items/*.ndjson``."""
        run_script(self.script, "load", str(world_dir), "--state", str(self.state))


@dataclass
class GcsEmulator(Service):
    """fake-gcs-server (in memory) started by ``gcs-emulator.sh``."""

    _buckets: itertools.count = field(default_factory=itertools.count, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the value of STORAGE_EMULATOR_HOST."""
        return self.env["STORAGE_EMULATOR_HOST"]

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/gcsfs options that reach the emulator (``gs://`` URLs, anonymous)."""
        return {"token": "anon", "project": "test", "endpoint_url": self.endpoint}

    @property
    def subprocess_env(self) -> dict[str, str]:
        """Environment variables for worker processes that use gcsfs against the emulator."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def new_bucket(self, prefix: str = "test") -> str:
        """Create an empty bucket with a name unique to this emulator and return the name."""
        name = f"{prefix}-{os.getpid()}-{next(self._buckets)}"
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=test", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 200:
                raise ServiceError(f"creating bucket {name} on {self.endpoint} answered HTTP {response.status}")
        return name


@dataclass
class HttpServer(Service):
    """A Range-capable static file server started by ``http-server.sh``."""

    @property
    def url(self) -> str:
        return self.env["HTTP_SERVER_URL"]

    @property
    def root(self) -> Path:
        return Path(self.env["HTTP_SERVER_ROOT"])


class ServicePool:
    """Starts services under one base directory and stops them all at :meth:`stop_all`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._started: list[Service] = []
        self._names = itertools.count()
        atexit.register(self.stop_all)

    def _state(self, name: str) -> Path:
        return self.base / f"{name}-{next(self._names)}"

    def _track(self, service: Service) -> Any:
        self._started.append(service)
        return service

    def stac_api(self, load: Path | str | None = None) -> StacApi:
        """A new STAC API; with ``load``, loaded with that world (``load/stac/...``)."""
        state = self._state("stac-api")
        args = ["start", "--state", str(state), "--owner-pid", str(os.getpid())]
        if load is not None:
            args += ["--load", str(load)]
        return self._track(StacApi("stac-api.sh", state, run_script("stac-api.sh", *args)))

    def gcs_emulator(self) -> GcsEmulator:
        state = self._state("gcs-emulator")
        env = run_script("gcs-emulator.sh", "start", "--state", str(state), "--owner-pid", str(os.getpid()))
        return self._track(GcsEmulator("gcs-emulator.sh", state, env))

    def http_server(self, root: Path | str) -> HttpServer:
        """A Range-capable HTTP server serving ``root``."""
        state = self._state("http-server")
        env = run_script("http-server.sh", "start", "--root", str(root), "--state", str(state),
                         "--owner-pid", str(os.getpid()))
        return self._track(HttpServer("http-server.sh", state, env))

    def stop_all(self) -> None:
        """Stop every service started here (newest first); raise if any stop failed."""
        errors = []
        while self._started:
            service = self._started.pop()
            try:
                service.stop()
            except (ServiceError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        if errors:
            raise ServiceError("stopping services failed:\n" + "\n".join(errors))


def write_stac_layout(out: Path, collections: dict[str, list[dict[str, Any]]]) -> Path:
    """Write ``out/stac/collections/<id>.json`` and ``out/stac/items/<id>.ndjson`` (the sample-world
    layout the scripts load) for hand-made items, with a minimal collection document each.

    Returns ``out``.
    """
    (out / "stac" / "collections").mkdir(parents=True, exist_ok=True)
    (out / "stac" / "items").mkdir(parents=True, exist_ok=True)
    for collection_id, items in collections.items():
        collection = {
            "type": "Collection", "stac_version": "1.0.0", "id": collection_id, "license": "proprietary",
            "description": f"test collection {collection_id}", "links": [],
            "extent": {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                       "temporal": {"interval": [["2015-01-01T00:00:00Z", None]]}},
        }
        (out / "stac" / "collections" / f"{collection_id}.json").write_text(json.dumps(collection, indent=2))
        lines = [json.dumps({**item, "collection": collection_id}) for item in items]
        (out / "stac" / "items" / f"{collection_id}.ndjson").write_text("\n".join(lines) + "\n")
    return out


def point_item(item_id: str, lon: float, lat: float, when: str, **properties: Any) -> dict[str, Any]:
    """A minimal valid STAC item: a 0.1 degree square at (lon, lat), one file:// asset."""
    w, s, e, n = lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {"datetime": when, **properties},
        "assets": {"data": {"href": f"file:///data/{item_id}.tif", "type": "image/tiff", "roles": ["data"]}},
        "links": [],
    }
