# Shared shell helpers for the local service scripts (sourced, not run).
#
# Conventions every service script follows:
#   * one state directory per service (default ${COPGEN_STATE:-<repo>/.services}/<service>);
#   * `start` writes STATE/env (KEY=VALUE lines, shell-sourceable) and prints it; a second `start`
#     on a live state only prints it again (exit 0);
#   * `status` prints the env and exits 0 when the service answers, exits 3 when it does not;
#   * `stop` stops every process the state names, removes the state, exits 0 (also when not running);
#   * `--owner-pid PID` makes the service stop itself once PID has exited (a watchdog for test
#     sessions that die without running their teardown).

copgen_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# The Python interpreter whose packages the services run from.
copgen_python() {
  if [ -n "${COPGEN_PYTHON:-}" ]; then
    echo "$COPGEN_PYTHON"
  elif [ -x "$copgen_repo/.venv/bin/python" ]; then
    echo "$copgen_repo/.venv/bin/python"
  else
    command -v python3
  fi
}

die() {  # die CODE MESSAGE...
  local code="$1"
  shift
  echo "$service: $*" >&2
  exit "$code"
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  "$(copgen_python)" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

need_value() {  # need_value "$@": the option in $1 must be followed by a value
  [ $# -ge 2 ] && [ -n "$2" ] || die 2 "option $1 needs a value"
}

pid_alive() {  # pid_alive PID
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null
}

# stop_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (default 10), then SIGKILL.
stop_pid() {
  local pid="${1:-}" limit="${2:-10}" i=0
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while pid_alive "$pid" && [ "$i" -lt $((limit * 10)) ]; do
    sleep 0.1
    i=$((i + 1))
  done
  if pid_alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.1
  fi
}

# wait_http URL SECONDS PID LOG: poll URL until it answers 2xx; fail early if PID dies.
wait_http() {
  local url="$1" limit="$2" pid="$3" log="$4" i=0
  while [ "$i" -lt $((limit * 10)) ]; do
    if curl -sf -o /dev/null --max-time 2 "$url"; then
      return 0
    fi
    if ! pid_alive "$pid"; then
      echo "$service: the process (pid $pid) exited before $url answered; last lines of $log:" >&2
      tail -n 40 "$log" >&2 || true
      return 1
    fi
    sleep 0.1
    i=$((i + 1))
  done
  echo "$service: $url did not answer within ${limit}s; last lines of $log:" >&2
  tail -n 40 "$log" >&2 || true
  return 1
}

env_get() {  # env_get FILE KEY
  [ -f "$1" ] || return 0
  sed -n "s/^$2=//p" "$1" | tail -n 1
}

# start_watchdog OWNER_PID STATE: run `$0 stop --state STATE` once OWNER_PID has exited.
# Prints the watchdog's pid.
start_watchdog() {
  local owner="$1" state="$2" script
  script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop --state "$3"' \
    watchdog "$owner" "$script" "$state" </dev/null >/dev/null 2>&1 9>&- &
  echo $!
}

# Stops the watchdog named in the env file, unless we are that watchdog.
stop_watchdog() {
  local wd
  wd="$(env_get "$1" WATCHDOG_PID)"
  if [ -n "$wd" ] && [ "$wd" != "$$" ] && pid_alive "$wd"; then
    kill -TERM -- "-$wd" 2>/dev/null || true  # its process group: the loop and its `sleep`
  fi
}

# Serialise start/load/stop on one state directory.
lock_state() {  # lock_state STATE
  mkdir -p "$1"
  exec 9>"$1/.lock"
  flock -w 120 9 || die 1 "could not lock $1/.lock within 120 s (another start/stop is running)"
}

# simple_service CMD STATE TIMEOUT OWNER_PID: start/status/stop for a single-process service.
# The calling script defines:
#   svc_launch PORT    exec the server in the foreground on 127.0.0.1:PORT (cwd, env as needed)
#   svc_ready_url URL  the URL that answers 2xx once the server is ready, given its base URL
#   svc_env URL        the KEY=VALUE lines naming the service for its users (e.g. FOO_URL=URL)
#   svc_pid_key        the env key holding the server pid
simple_service() {
  local cmd="$1" state="$2" timeout_s="$3" owner_pid="$4"
  local envfile="$state/env" pid port url watchdog_pid=""
  running() {
    [ -f "$envfile" ] || return 1
    pid_alive "$(env_get "$envfile" "$(svc_pid_key)")" || return 1
    curl -sf -o /dev/null --max-time 5 "$(svc_ready_url "$(env_get "$envfile" SERVICE_URL)")"
  }
  cleanup() {
    stop_watchdog "$envfile"
    stop_pid "$(env_get "$envfile" "$(svc_pid_key)")" 10
    rm -f "$envfile" "$state/server.log"
  }
  case "$cmd" in
    start)
      lock_state "$state"
      if running; then
        cat "$envfile"
        return 0
      fi
      [ ! -f "$envfile" ] || cleanup
      port="$(free_port)"
      url="http://127.0.0.1:$port"
      (svc_launch "$port" </dev/null >"$state/server.log" 2>&1 9>&-) &
      pid=$!
      printf 'SERVICE_URL=%s\n%s=%s\n' "$url" "$(svc_pid_key)" "$pid" >"$envfile"
      if ! wait_http "$(svc_ready_url "$url")" "$timeout_s" "$pid" "$state/server.log"; then
        cleanup
        rm -f "$state/.lock"
        rmdir "$state" 2>/dev/null || true
        exit 1
      fi
      [ -z "$owner_pid" ] || watchdog_pid="$(start_watchdog "$owner_pid" "$state")"
      {
        svc_env "$url"
        echo "SERVICE_URL=$url"
        echo "$(svc_pid_key)=$pid"
        echo "WATCHDOG_PID=$watchdog_pid"
        echo "SERVICE_STATE=$state"
      } >"$envfile"
      cat "$envfile"
      ;;
    status)
      if running; then
        cat "$envfile"
      else
        echo "$service: not running (state $state)" >&2
        return 3
      fi
      ;;
    stop)
      lock_state "$state"
      if [ -f "$envfile" ]; then
        cleanup
        echo "$service: stopped (state $state)" >&2
      else
        echo "$service: not running (state $state)" >&2
      fi
      rm -f "$state/.lock"
      rmdir "$state" 2>/dev/null || true
      ;;
    *)
      die 2 "unknown command '$cmd'; use start, status or stop"
      ;;
  esac
}

# parse_simple_args ARGS...: sets $state, $timeout_s, $owner_pid, and $extra_root (--root DIR).
parse_simple_args() {
  state="${COPGEN_STATE:-$copgen_repo/.services}/$service"
  timeout_s=30
  owner_pid=""
  extra_root=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --state) need_value "$@"; state="$2"; shift 2 ;;
      --timeout) need_value "$@"; timeout_s="$2"; shift 2 ;;
      --owner-pid) need_value "$@"; owner_pid="$2"; shift 2 ;;
      --root) need_value "$@"; extra_root="$2"; shift 2 ;;
      -h|--help) usage 0 ;;
      *) die 2 "unknown argument '$1'; see '$(basename "$0") --help'" ;;
    esac
  done
  case "$timeout_s" in ''|*[!0-9]*) die 2 "--timeout must be whole seconds, got '$timeout_s'" ;; esac
  state="$(realpath -m "$state")"
}
