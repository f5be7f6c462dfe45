"""The local service scripts (infra/local): start, report their env, answer, stop, leave nothing behind."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import (
    INFRA,
    GcsEmulator,
    HttpServer,
    ServiceError,
    parse_env,
    point_item,
    run_script,
    write_stac_layout,
)

pytestmark = pytest.mark.services


def _alive(pid: int) -> bool:
    """True for a live process (zombies, already exited but not yet reaped, count as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _pids(env: dict[str, str]) -> list[int]:
    return [int(v) for k, v in env.items() if k.endswith("_PID") and v.isdigit()]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid() or not _alive(int(proc.name)):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _search_ids(url: str, collection: str) -> set[str]:
    return {f["id"] for f in _get_json(f"{url}/search?collections={collection}&limit=100")["features"]}


def _status(script: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INFRA / script), "status", "--state", str(state)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def _wait_until_gone(pids: list[int], limit_s: float = 30.0) -> list[int]:
    """Poll until none of ``pids`` is alive or ``limit_s`` passed; return those still alive."""
    deadline = time.monotonic() + limit_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def test_stac_api_lifecycle_load_incremental_idempotent_stop(tmp_path: Path) -> None:
    world = write_stac_layout(tmp_path / "world", {"test-s2": [
        point_item("a", 10.0, 56.0, "2024-04-01T10:00:00Z", **{"eo:cloud_cover": 5.0}),
        point_item("b", 10.2, 56.0, "2024-04-11T10:00:00Z", **{"eo:cloud_cover": 50.0}),
    ]})
    state = tmp_path / "state"
    env = run_script("stac-api.sh", "start", "--state", str(state), "--load", str(world))
    try:
        url = env["STAC_API_URL"]
        assert url.startswith("http://127.0.0.1:")
        assert env["PGSTAC_DSN"].startswith("postgresql://postgres@127.0.0.1:")
        assert parse_env((state / "env").read_text())["STAC_API_URL"] == url
        assert all(_alive(p) for p in _pids(env))
        assert _get_json(f"{url}/_mgmt/ping")["message"] == "PONG"
        assert [c["id"] for c in _get_json(f"{url}/collections")["collections"]] == ["test-s2"]
        assert _search_ids(url, "test-s2") == {"a", "b"}

        again = run_script("stac-api.sh", "start", "--state", str(state))
        assert again["STAC_API_URL"] == url and again["STAC_API_PID"] == env["STAC_API_PID"]
        assert _status("stac-api.sh", state).returncode == 0

        # An incremental load: one new item, one changed item (upsert), nothing removed.
        write_stac_layout(tmp_path / "more", {"test-s2": [
            point_item("b", 10.2, 56.0, "2024-04-11T10:00:00Z", **{"eo:cloud_cover": 7.5}),
            point_item("c", 10.4, 56.0, "2024-04-21T10:00:00Z", **{"eo:cloud_cover": 1.0}),
        ]})
        run_script("stac-api.sh", "load", str(tmp_path / "more"), "--state", str(state))
        assert _search_ids(url, "test-s2") == {"a", "b", "c"}
        assert _get_json(f"{url}/collections/test-s2/items/b")["properties"]["eo:cloud_cover"] == 7.5
    finally:
        run_script("stac-api.sh", "stop", "--state", str(state))
    assert _wait_until_gone(_pids(env), 10) == []
    assert not state.exists()
    assert not Path(env["PG_BASE"]).exists()
    assert _processes_mentioning(env["PG_BASE"]) == []
    assert _status("stac-api.sh", state).returncode == 3
    run_script("stac-api.sh", "stop", "--state", str(state))  # stopping a stopped API is fine


def test_stac_api_bad_world_is_a_usage_error_and_starts_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.run(["bash", str(INFRA / "stac-api.sh"), "start", "--state", str(state),
                           "--load", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "stac/collections" in proc.stderr
    assert not (state / "env").exists()
    assert _processes_mentioning(str(state)) == []


def test_stac_api_readiness_timeout_reports_and_cleans_up(tmp_path: Path) -> None:
    """A server that does not answer in time: exit 1, the log tail on stderr, nothing left running."""
    state = tmp_path / "state"
    private_tmp = Path(tempfile.mkdtemp(prefix="copgen-test-"))  # where (as root) the PostgreSQL data goes
    try:
        private_tmp.chmod(0o755)
        proc = subprocess.run(["bash", str(INFRA / "stac-api.sh"), "start", "--state", str(state), "--timeout", "0"],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(private_tmp)})
        assert proc.returncode == 1
        assert "did not answer within 0s" in proc.stderr and "api.log" in proc.stderr
        assert not state.exists()
        assert list(private_tmp.iterdir()) == []
        assert _processes_mentioning(str(private_tmp)) == []
        assert _processes_mentioning(str(state)) == []
    finally:
        shutil.rmtree(private_tmp)


def test_stac_api_load_without_a_running_api_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="start one with"):
        run_script("stac-api.sh", "load", str(tmp_path), "--state", str(tmp_path / "state"))


@pytest.mark.parametrize("script", ["stac-api.sh", "gcs-emulator.sh", "http-server.sh"])
def test_unknown_command_exits_2(script: str) -> None:
    proc = subprocess.run(["bash", str(INFRA / script), "frobnicate"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "frobnicate" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to switch users")
def test_stac_api_runs_as_an_unprivileged_user(tmp_path: Path) -> None:
    """As non-root the script runs the PostgreSQL binaries directly, with data under the state dir."""
    python = os.environ.get("COPGEN_NONROOT_PYTHON", str(Path(INFRA).parents[1] / ".venv" / "bin" / "python"))
    probe = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c", "import pypgstac, uvicorn"],
                           capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"user 'nobody' cannot run {python} with pypgstac (an interpreter under /root?); set "
                    "COPGEN_NONROOT_PYTHON to a world-readable venv with copgen[services] to run this test")
    home = Path(tempfile.mkdtemp(prefix="copgen-nobody-"))  # pytest's tmp_path is private to root
    try:
        home.chmod(0o755)
        shutil.chown(home, "nobody")
        world = write_stac_layout(home / "world", {"test-s2": [point_item("a", 10.0, 56.0, "2024-04-01T10:00:00Z")]})
        state = home / "state"
        base = ["runuser", "-u", "nobody", "--", "env", f"HOME={home}", f"COPGEN_PYTHON={python}",
                "bash", str(INFRA / "stac-api.sh")]
        out = subprocess.run([*base, "start", "--state", str(state), "--load", str(world)],
                             capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        env = parse_env(out.stdout)
        try:
            assert out.returncode == 0, out.stderr
            assert Path(env["PGDATA"]).is_relative_to(state)
            assert Path(f"/proc/{env['PG_PID']}").stat().st_uid == pwd.getpwnam("nobody").pw_uid
            assert _search_ids(env["STAC_API_URL"], "test-s2") == {"a"}
        finally:
            subprocess.run([*base, "stop", "--state", str(state)], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(home)
    assert _wait_until_gone(_pids(env), 10) == []


def test_gcs_emulator_script_lifecycle(tmp_path: Path) -> None:
    state = tmp_path / "gcs"
    env = run_script("gcs-emulator.sh", "start", "--state", str(state))
    try:
        endpoint = env["STORAGE_EMULATOR_HOST"]
        assert endpoint.startswith("http://127.0.0.1:")
        assert _get_json(f"{endpoint}/storage/v1/b")["kind"] == "storage#buckets"
        assert run_script("gcs-emulator.sh", "start", "--state", str(state))["GCS_EMULATOR_PID"] == env["GCS_EMULATOR_PID"]
        assert _status("gcs-emulator.sh", state).returncode == 0
    finally:
        run_script("gcs-emulator.sh", "stop", "--state", str(state))
    assert _wait_until_gone(_pids(env), 10) == []
    assert not state.exists()
    assert _status("gcs-emulator.sh", state).returncode == 3


def test_services_stop_when_their_owner_dies(tmp_path: Path) -> None:
    """The --owner-pid watchdog stops a service whose test session died without its teardown."""
    owner = subprocess.Popen(["sleep", "600"])
    state = tmp_path / "gcs"
    env = run_script("gcs-emulator.sh", "start", "--state", str(state), "--owner-pid", str(owner.pid))
    try:
        assert _alive(int(env["GCS_EMULATOR_PID"])) and _alive(int(env["WATCHDOG_PID"]))
        owner.kill()
        owner.wait()
        assert _wait_until_gone(_pids(env)) == []
        assert not (state / "env").exists()
    finally:
        run_script("gcs-emulator.sh", "stop", "--state", str(state))


def test_gcs_emulator_round_trips_a_zarr_through_gcsfs(gcs_emulator: GcsEmulator) -> None:
    np = pytest.importorskip("numpy")
    xr = pytest.importorskip("xarray")
    pytest.importorskip("gcsfs")
    bucket = gcs_emulator.new_bucket("zarr")
    assert bucket != gcs_emulator.new_bucket("zarr")
    values = np.arange(24, dtype="float32").reshape(2, 3, 4)
    values[0, 0, 0] = np.nan
    ds = xr.Dataset({"b04": (("time", "y", "x"), values)}, coords={"x": np.arange(4) * 10.0})
    url = f"gs://{bucket}/cube.zarr"
    ds.to_zarr(url, mode="w", storage_options=gcs_emulator.storage_options, consolidated=True)
    back = xr.open_zarr(url, storage_options=gcs_emulator.storage_options).load()
    xr.testing.assert_identical(back, ds)


def test_http_server_serves_byte_ranges(http_server_factory, tmp_path: Path) -> None:  # noqa: ANN001
    payload = bytes(range(256)) * 4
    (tmp_path / "cog.tif").write_bytes(payload)
    server: HttpServer = http_server_factory(tmp_path)
    request = urllib.request.Request(f"{server.url}/cog.tif", headers={"Range": "bytes=100-163"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 206
        assert response.read() == payload[100:164]
    assert server.root == tmp_path


def _copgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          timeout=180, cwd=INFRA.parents[1], stdin=subprocess.DEVNULL)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _serve(world: Path, state: Path, *, sigint_ignored: bool = False) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``copgen stac serve`` in the foreground; returns it once it printed its URL.

    ``sigint_ignored`` starts it as a non-interactive shell's '&' job is started (SIGINT ignored, which
    Python then leaves ignored unless the program installs a handler itself).
    """
    # stderr goes to a file: an unread pipe fills up with the server's log and blocks its shutdown
    err_path = state.parent / f"{state.name}.serve.err"
    with open(err_path, "a") as err:
        proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "pipelines.cli", "stac", "serve",
                                 "--world", str(world), "--state", str(state)], stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=INFRA.parents[1], stdin=subprocess.DEVNULL,
                                preexec_fn=_ignore_sigint if sigint_ignored else None)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("STAC_API_URL="):
        proc.kill()
        proc.wait()
        raise AssertionError(f"serve printed {line!r}; stderr: {err_path.read_text()[-3000:]}")
    return proc, parse_env((state / "env").read_text())


def test_cli_serve_search_then_stop_from_another_shell_or_ctrl_c(tmp_path: Path) -> None:
    world = write_stac_layout(tmp_path / "world", {"test-s2": [
        point_item("item-clear", 10.0, 56.0, "2024-04-01T10:00:00Z", **{"eo:cloud_cover": 5.0}),
        point_item("item-cloudy", 10.2, 56.0, "2024-04-11T10:00:00Z", **{"eo:cloud_cover": 50.0}),
    ]})
    state = tmp_path / "state"

    serving, env = _serve(world, state)
    try:
        found = _copgen("stac", "search", "--url", env["STAC_API_URL"], "--collections", "test-s2",
                        "--filter", "eo:cloud_cover < 20")
        assert found.returncode == 0, found.stderr
        assert "item-clear" in found.stdout and "item-cloudy" not in found.stdout
        assert "5.00" in found.stdout
        assert _copgen("stac", "stop", "--state", str(state)).returncode == 0
        assert _wait_serve(serving, state) == 0
    finally:
        serving.kill()
        _copgen("stac", "stop", "--state", str(state))
    assert _wait_until_gone(_pids(env), 10) == []

    serving, env = _serve(world, state, sigint_ignored=True)  # as under a CI runner's '&' job
    try:
        serving.send_signal(signal.SIGINT)
        assert _wait_serve(serving, state) == 0
    finally:
        serving.kill()
        _copgen("stac", "stop", "--state", str(state))
    assert _wait_until_gone(_pids(env), 10) == []
    assert not state.exists()


def _wait_serve(proc: subprocess.Popen[str], state: Path, timeout: float = 180) -> int:
    """Wait for a foreground serve; on timeout, fail with its Python stack and the processes around it."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # -X faulthandler dumps every thread's stack to its stderr file
        proc.wait(timeout=30)
        err_path = state.parent / f"{state.name}.serve.err"
        ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,etime,args"], capture_output=True, text=True).stdout
        lock_holders = subprocess.run(["bash", "-c", f"ls -l /proc/[0-9]*/fd 2>/dev/null | grep -F '{state}' || true"],
                                      capture_output=True, text=True).stdout
        listing = sorted(str(p) for p in state.rglob("*")) if state.exists() else "(state gone)"
        raise AssertionError(f"serve did not exit within {timeout} s.\nstderr:\n{err_path.read_text()[-6000:]}\n"
                             f"state: {listing}\nfds on state: {lock_holders}\nps:\n{ps}") from None


def test_cli_search_exit_codes(tmp_path: Path) -> None:
    bad_bbox = _copgen("stac", "search", "--url", "http://127.0.0.1:9", "-c", "x", "--bbox", "1,2,3")
    assert bad_bbox.returncode == 2 and "west,south,east,north" in bad_bbox.stderr
    down = _copgen("stac", "search", "--url", "http://127.0.0.1:9", "-c", "x", "--retries", "0")
    assert down.returncode == 1 and "unavailable" in down.stderr
    missing_world = _copgen("stac", "serve", "--world", str(tmp_path / "nope"))
    assert missing_world.returncode == 2
