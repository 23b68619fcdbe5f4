#!/usr/bin/env bash
# What the tests need beyond the Python packages, on a fresh Debian/Ubuntu machine, from
# Debian's packages:
#   - PostgreSQL's server binaries (initdb, postgres): the integration tests start their own
#     throwaway cluster on a free 127.0.0.1 port and stop it, so no system service is started.
#   - a Java 17+ runtime: Spark local[2] for `sentops score --spark` (tests/test_score_spark.py;
#     pyspark itself comes from PyPI with `pip install -e '.[dev]'`).
# The rest of the Python side (psycopg, the Compose CLI, hadolint) comes with make setup.
#
#   bash scripts/ci_services.sh      # idempotent: installs only what is missing
set -euo pipefail

have_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}

have_java17() {
  command -v java >/dev/null || return 1
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ -n "$major" ] && [ "$major" -ge 17 ]
}

missing=()
have_postgres || missing+=(postgresql)
have_java17 || missing+=(openjdk-17-jre-headless)

if [ ${#missing[@]} -eq 0 ]; then
  echo "ci_services: PostgreSQL server binaries and a Java 17+ runtime present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v apt-get >/dev/null; then
  echo "ci_services: no apt-get here; install ${missing[*]} yourself" >&2
  exit 1
fi
echo "ci_services: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
have_postgres
have_java17
echo "ci_services: PostgreSQL $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1), $(java -version 2>&1 | head -1)"
