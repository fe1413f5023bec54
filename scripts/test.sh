#!/usr/bin/env bash
# Set up and run the whole test suite against real services: PostgreSQL (system or
# the bundled pgserver build) with PostGIS (setup.sh installs both when root),
# OpenSSH sshd with internal-sftp, an SMTP server.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k parity`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v zstd >/dev/null || need+=(zstd)
command -v chromium >/dev/null || need+=(chromium)  # the UI tests (test_ui_browser.py)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        [ -f /tmp/.arb-apt-updated ] || { apt-get update -qq && touch /tmp/.arb-apt-updated; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "test: missing ${need[*]}; tests that need them will be skipped" >&2
    fi
fi

mkdir -p test-artifacts
exec .venv/bin/python -m pytest -p no:cacheprovider --junitxml="${ARB_JUNIT_XML:-test-artifacts/junit.xml}" "$@"
