#!/usr/bin/env bash
# Install everything copgen needs on a fresh Debian/Python 3.11 machine: the system packages for the
# local STAC API (PostgreSQL 15 + PostGIS 3) and a .venv in the repository root with the project and
# its extras. Idempotent: a second run with nothing changed returns in about a second.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
stamp=".venv/.copgen-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"

need_apt=0
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt=1
[ -f /usr/share/postgresql/15/extension/postgis.control ] || need_apt=1
if [ "$need_apt" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: PostgreSQL 15 + PostGIS 3 are missing and this is not root." >&2
    echo "       Run: sudo apt-get install postgresql-15 postgresql-15-postgis-3" >&2
    exit 1
  fi
  echo "setup: installing PostgreSQL 15 + PostGIS 3 (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    postgresql-15 postgresql-15-postgis-3 >/dev/null
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: creating .venv and installing copgen with all extras (about a minute)"
[ -x .venv/bin/python ] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null
# pip (not uv/poetry): only pip finds the machine's local torch 2.13.0 CPU wheel.
log=.venv/pip-install.log
if ! .venv/bin/python -m pip install -q -e '.[beam,dask,gcs,dev]' >"$log" 2>&1; then
  grep -v "is ignored" "$log" | tail -40 >&2
  echo "setup: pip install failed (full log: $log)" >&2
  exit 1
fi
.venv/bin/python -c "import torch, copgen_core; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "$want" > "$stamp"
echo "setup: done"
