#!/usr/bin/env bash
# A local STAC API: PostgreSQL 15 + pgstac + stac-fastapi-pgstac (uvicorn), on free 127.0.0.1 ports.
#
#   stac-api.sh start  [--state DIR] [--load WORLD] [--timeout S] [--owner-pid PID]
#   stac-api.sh load   WORLD [--state DIR]
#   stac-api.sh status [--state DIR]
#   stac-api.sh stop   [--state DIR]
#
# WORLD is a directory holding stac/collections/*.json and stac/items/*.ndjson (or those two
# folders directly); loading upserts, so running `load` again adds new items and updates changed
# ones. `start` prints (and writes to DIR/env) STAC_API_URL, PGSTAC_DSN and the pids. DIR defaults
# to ${COPGEN_STATE:-<repo>/.services}/stac-api. As root, PostgreSQL runs as the `postgres` user
# (runuser) from a private directory under ${TMPDIR:-/tmp}; otherwise it runs as the caller.
# Exit codes: 0 ok, 1 service failure, 2 bad usage, 3 (status) not running.
set -eEuo pipefail
service="stac-api"
# shellcheck source=infra/local/_lib.sh
source "$(dirname "$0")/_lib.sh"

usage() {  # usage [EXIT_CODE]
  sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
[ "$cmd" != "-h" ] && [ "$cmd" != "--help" ] || usage 0
shift
state="${COPGEN_STATE:-$copgen_repo/.services}/$service"
world=""
timeout_s=60
owner_pid=""
if [ "$cmd" = "load" ]; then
  [ $# -ge 1 ] && [ "${1#--}" = "$1" ] || die 2 "load needs a WORLD directory: stac-api.sh load WORLD [--state DIR]"
  world="$1"
  shift
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --state) need_value "$@"; state="$2"; shift 2 ;;
    --load) need_value "$@"; world="$2"; shift 2 ;;
    --timeout) need_value "$@"; timeout_s="$2"; shift 2 ;;
    --owner-pid) need_value "$@"; owner_pid="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) die 2 "unknown argument '$1'; see 'stac-api.sh --help'" ;;
  esac
done
case "$timeout_s" in ''|*[!0-9]*) die 2 "--timeout must be whole seconds, got '$timeout_s'" ;; esac
state="$(realpath -m "$state")"
envfile="$state/env"
py="$(copgen_python)"
pybin="$(dirname "$py")"

pg_bin="${PG_BIN:-}"
if [ -z "$pg_bin" ]; then
  for v in 15 16 17 14; do
    if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then pg_bin="/usr/lib/postgresql/$v/bin"; break; fi
  done
fi

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# The stac/ folder inside WORLD (or WORLD itself when it already is one).
stac_dir_of() {
  if [ -d "$1/stac/collections" ]; then
    echo "$1/stac"
  elif [ -d "$1/collections" ]; then
    echo "$1"
  else
    die 2 "no stac/collections/ under '$1': expected WORLD/stac/collections/*.json and WORLD/stac/items/*.ndjson (generate one with 'copgen world --out DIR')"
  fi
}

is_running() {
  [ -f "$envfile" ] || return 1
  pid_alive "$(env_get "$envfile" STAC_API_PID)" || return 1
  pid_alive "$(env_get "$envfile" PG_PID)" || return 1
  curl -sf -o /dev/null --max-time 5 "$(env_get "$envfile" STAC_API_URL)/_mgmt/ping"
}

do_load() {  # do_load WORLD
  local stac dsn collections_json items_ndjson n_coll n_items f sep
  stac="$(stac_dir_of "$1")"
  dsn="$(env_get "$envfile" PGSTAC_DSN)"
  shopt -s nullglob
  local coll_files=("$stac"/collections/*.json)
  local item_files=("$stac"/items/*.ndjson)
  shopt -u nullglob
  [ ${#coll_files[@]} -gt 0 ] || die 2 "no collection files in $stac/collections/*.json"
  collections_json="$state/load-collections.json"
  items_ndjson="$state/load-items.ndjson"
  # One JSON array for all collections, one ndjson for all items: two pypgstac runs, not twenty.
  {
    echo "["
    sep=""
    for f in "${coll_files[@]}"; do
      printf '%s' "$sep"
      cat "$f"
      sep=","
    done
    echo "]"
  } >"$collections_json"
  if [ ${#item_files[@]} -gt 0 ]; then
    awk 'NF' "${item_files[@]}" >"$items_ndjson"
  else
    : >"$items_ndjson"
  fi
  n_coll=${#coll_files[@]}
  n_items=$(wc -l <"$items_ndjson")
  if ! "$pybin/pypgstac" load collections "$collections_json" --dsn "$dsn" --method upsert \
      >>"$state/load.log" 2>&1; then
    tail -n 30 "$state/load.log" >&2
    die 1 "loading collections from $stac/collections failed (log: $state/load.log)"
  fi
  if [ "$n_items" -gt 0 ] && ! "$pybin/pypgstac" load items "$items_ndjson" --dsn "$dsn" --method upsert \
      >>"$state/load.log" 2>&1; then
    tail -n 30 "$state/load.log" >&2
    die 1 "loading items from $stac/items failed (log: $state/load.log); every item's collection must be in $stac/collections"
  fi
  rm -f "$collections_json" "$items_ndjson"
  echo "$service: loaded $n_coll collections and $n_items items from $stac" >&2
}

do_stop() {
  local pgdata pgbase api_pid
  stop_watchdog "$envfile"
  api_pid="$(env_get "$envfile" STAC_API_PID)"
  stop_pid "$api_pid" 10
  pgdata="$(env_get "$envfile" PGDATA)"
  pgbase="$(env_get "$envfile" PG_BASE)"
  if [ -n "$pgdata" ] && [ -f "$pgdata/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || stop_pid "$(env_get "$envfile" PG_PID)" 10
  fi
  if [ -n "$pgbase" ] && [ -d "$pgbase" ]; then
    rm -rf "$pgbase"
  fi
  rm -rf "$state/pg"
  rm -f "$envfile" "$state/api.log" "$state/load.log" "$state/load-collections.json" "$state/load-items.ndjson"
}

# After a failed start: stop what was started and leave no state behind.
fail_start() {
  do_stop
  rm -f "$state/.lock"
  rmdir "$state" 2>/dev/null || true
  exit 1
}

do_start() {
  local pgbase pgdata pgport api_port dsn api_pid pg_pid url watchdog_pid="" attempt
  [ -n "$pg_bin" ] || die 1 "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; run infra/local/setup.sh (or set PG_BIN)"
  [ -f "/usr/share/postgresql/$(basename "$(dirname "$pg_bin")")/extension/postgis.control" ] \
    || die 1 "PostGIS is not installed for $pg_bin; run infra/local/setup.sh (apt-get install postgresql-15-postgis-3)"
  [ -x "$pybin/pypgstac" ] || die 1 "pypgstac is not installed in $pybin; run infra/local/setup.sh"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die 1 "running as root but there is no 'postgres' user to run PostgreSQL as"
    # The state dir may sit under a private (0700) directory such as pytest's; postgres could not
    # reach it, so its data lives in a directory of its own.
    pgbase="$(mktemp -d "${TMPDIR:-/tmp}/copgen-pgstac.XXXXXX")"
    chown postgres:postgres "$pgbase"
  else
    pgbase="$state/pg"
    mkdir -p "$pgbase"
  fi
  chmod 700 "$pgbase"
  pgdata="$pgbase/data"
  # Record what exists so far: a failure below can then clean up with do_stop.
  printf 'PG_BASE=%s\nPGDATA=%s\n' "$pgbase" "$pgdata" >"$envfile"
  trap fail_start ERR INT TERM
  if ! as_postgres "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$pgbase/initdb.log" 2>&1; then
    cat "$pgbase/initdb.log" >&2
    false
  fi
  for attempt in 1 2 3; do  # a port picked as free can be taken before postgres binds it
    pgport="$(free_port)"
    if as_postgres "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgbase/postgres.log" -w -t 30 \
        -o "-p $pgport -k $pgbase -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null 2>&1 9>&-; then  # 9>&-: the server must not hold our state lock
      break
    fi
    if [ "$attempt" = 3 ]; then
      echo "$service: PostgreSQL did not start; last lines of $pgbase/postgres.log:" >&2
      tail -n 30 "$pgbase/postgres.log" >&2 || true
      false
    fi
  done
  pg_pid="$(head -n 1 "$pgdata/postmaster.pid")"
  dsn="postgresql://postgres@127.0.0.1:$pgport/pgstac"
  printf 'PG_BASE=%s\nPGDATA=%s\nPG_PID=%s\nPGSTAC_DSN=%s\n' "$pgbase" "$pgdata" "$pg_pid" "$dsn" >"$envfile"
  "$pg_bin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres pgstac
  if ! "$pybin/pypgstac" migrate --dsn "$dsn" >"$state/load.log" 2>&1; then
    cat "$state/load.log" >&2
    false
  fi
  api_port="$(free_port)"
  url="http://127.0.0.1:$api_port"
  # cwd = state: stac-fastapi reads a .env from its working directory; keep stray ones out.
  (
    cd "$state"
    export PGUSER=postgres PGPASSWORD=unused PGHOST=127.0.0.1 PGPORT="$pgport" PGDATABASE=pgstac
    export STAC_FASTAPI_TITLE="copgen local STAC API" STAC_FASTAPI_DESCRIPTION="pgstac on $dsn"
    export STAC_FASTAPI_LANDING_ID="copgen-local" STAC_FASTAPI_VERSION="local"
    exec setsid "$py" -m uvicorn stac_fastapi.pgstac.app:create_app --factory \
      --host 127.0.0.1 --port "$api_port" --log-level warning </dev/null >"$state/api.log" 2>&1 9>&-
  ) &
  api_pid=$!
  printf 'STAC_API_PID=%s\n' "$api_pid" >>"$envfile"
  wait_http "$url/_mgmt/ping" "$timeout_s" "$api_pid" "$state/api.log"
  if [ -n "$owner_pid" ]; then
    watchdog_pid="$(start_watchdog "$owner_pid" "$state")"
  fi
  trap - ERR INT TERM
  {
    echo "STAC_API_URL=$url"
    echo "PGSTAC_DSN=$dsn"
    echo "STAC_API_PID=$api_pid"
    echo "PG_PID=$pg_pid"
    echo "PGDATA=$pgdata"
    echo "PG_BASE=$pgbase"
    echo "WATCHDOG_PID=$watchdog_pid"
    echo "STAC_API_STATE=$state"
  } >"$envfile"
}

case "$cmd" in
  start)
    lock_state "$state"
    if is_running; then
      [ -z "$world" ] || do_load "$world"
      cat "$envfile"
      exit 0
    fi
    [ ! -f "$envfile" ] || do_stop  # stale state from a crashed run
    [ -z "$world" ] || stac_dir_of "$world" >/dev/null
    do_start
    if [ -n "$world" ]; then
      trap fail_start EXIT
      do_load "$world"
      trap - EXIT
    fi
    cat "$envfile"
    ;;
  load)
    lock_state "$state"
    is_running || die 1 "no STAC API is running for state $state; start one with 'stac-api.sh start --state $state'"
    do_load "$world"
    ;;
  status)
    if is_running; then
      cat "$envfile"
    else
      echo "$service: not running (state $state)" >&2
      exit 3
    fi
    ;;
  stop)
    lock_state "$state"
    if [ -f "$envfile" ]; then
      do_stop
      echo "$service: stopped (state $state)" >&2
    else
      echo "$service: not running (state $state)" >&2
    fi
    rm -f "$state/.lock"
    rmdir "$state" 2>/dev/null || true
    ;;
  *)
    die 2 "unknown command '$cmd'; use start, load, status or stop"
    ;;
esac
