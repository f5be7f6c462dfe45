#!/usr/bin/env bash
# A static HTTP server with Range support (RangeHTTPServer) on a free 127.0.0.1 port, for reading
# COGs through GDAL's /vsicurl/ the way a cloud bucket would serve them (plain `python -m
# http.server` has no Range support and GDAL fails on it).
#
#   http-server.sh start  --root DIR [--state STATE] [--timeout S] [--owner-pid PID]
#   http-server.sh status [--state STATE]
#   http-server.sh stop   [--state STATE]
#
# `start` prints (and writes to STATE/env) HTTP_SERVER_URL=http://127.0.0.1:PORT, serving DIR.
# Set GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR in readers to skip directory listings.
# STATE defaults to ${COPGEN_STATE:-<repo>/.services}/http-server.
# Exit codes: 0 ok, 1 service failure, 2 bad usage, 3 (status) not running.
set -euo pipefail
service="http-server"
# shellcheck source=infra/local/_lib.sh
source "$(dirname "$0")/_lib.sh"

usage() {  # usage [EXIT_CODE]
  sed -n '6,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

svc_pid_key() { echo HTTP_SERVER_PID; }
svc_ready_url() { echo "$1/"; }
svc_env() { echo "HTTP_SERVER_URL=$1"; echo "HTTP_SERVER_ROOT=$root_dir"; }
svc_launch() {
  cd "$root_dir"  # RangeHTTPServer has no --directory flag
  exec "$(copgen_python)" -m RangeHTTPServer --bind 127.0.0.1 "$1"
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
[ "$cmd" != "-h" ] && [ "$cmd" != "--help" ] || usage 0
shift
parse_simple_args "$@"
root_dir=""
if [ "$cmd" = "start" ]; then
  [ -n "$extra_root" ] || die 2 "start needs --root DIR (the directory to serve)"
  [ -d "$extra_root" ] || die 2 "--root '$extra_root' is not a directory"
  root_dir="$(cd "$extra_root" && pwd)"
fi
simple_service "$cmd" "$state" "$timeout_s" "$owner_pid"
