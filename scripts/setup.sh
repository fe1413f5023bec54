#!/usr/bin/env bash
# Create .venv with the locked dependency set. Needs only Python 3.11+; installs
# Debian packages it needs (python3-venv; PostgreSQL with PostGIS for the receiver's
# database, the demo and the tests) when run as root and they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    echo "setup: Python 3.11 or newer is required (found $("$PY" --version 2>&1))." >&2; exit 1; }

apt_install() {  # apt_install PACKAGE... : only when root and apt is there
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        if [ ! -f /tmp/.arb-apt-updated ]; then apt-get update -qq && touch /tmp/.arb-apt-updated; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        echo "setup: please install: $* (needs root)" >&2; return 1
    fi
}

# The receiver's database needs PostGIS (TranSappViz's geometry), and `arb zones import`
# its shp2pgsql: the extension is built for one PostgreSQL major, the system's.
pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
pg_major=${pg_major:-15}
postgis=(postgresql-"$pg_major"-postgis-3 postgis)
if [ ! -f /usr/share/postgresql/"$pg_major"/extension/postgis.control ] || ! command -v shp2pgsql >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt_install "${postgis[@]}"
    else
        echo "setup: PostGIS is missing: as root, apt-get install ${postgis[*]} (the receiver's database needs it)" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv && rm -rf .venv && "$PY" -m venv .venv; }
fi
# uv installs the pinned set in seconds; bytecode is compiled so imports stay fast
# even where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.8 2>/dev/null
.venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode -r requirements.lock
.venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode --no-deps -e .
echo "setup: .venv ready ($(.venv/bin/python --version), dagster $(.venv/bin/python -c 'import dagster; print(dagster.__version__)'))"
