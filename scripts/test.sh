#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and interop tests against real DICOM
# peers (DCMTK, pynetdicom). Installs the peer tools it needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the DICOM peers, what the build compiles C/C++ with (CharLS, SQLite), the
# browser, and what the tests and this script call (curl, openssl, Python's venv).
missing=()
[ -x /usr/bin/storescu ] || missing+=(dcmtk)
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v g++ >/dev/null || missing+=(g++)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # browser tests (OHIF, web UI)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)  # the Debian package test checks its unit
command -v psql >/dev/null || missing+=(postgresql-client)  # the PostgreSQL index tests make databases
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the tests need ${missing[*]}: install them (sudo apt-get install ${missing[*]}) or run this as root" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian package test builds the package from the test binary with cargo-deb, and
# installs it with a system user: root only.
if ! cargo-deb --version 2>/dev/null | grep -q '^cargo-deb 3\.8\.0'; then
  echo "installing cargo-deb 3.8.0 (the Debian package test)"
  cargo install cargo-deb --version 3.8.0 --locked
fi
# The fuzz targets (fuzz/, scripts/fuzz.sh) are built with cargo-fuzz.
if ! cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13\.2'; then
  echo "installing cargo-fuzz 0.13.2 (the fuzz targets)"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
# The S3 blob-store tests run against a real Garage (AGPL-3.0: run as its own process, never
# linked). Built once into ~/.cargo/bin: a long build (15 to 40 minutes on two cores), after
# which the binary stays.
if ! garage --version 2>/dev/null | grep -qE '(cargo:|v)2\.5\.0 '; then
  echo "installing garage 2.5.0 (the S3 blob-store tests)"
  cargo install garage --version 2.5.0 --locked
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: the Debian package test is skipped (PACS_SKIP_ROOT_TESTS=1)"
  export PACS_SKIP_ROOT_TESTS=1
fi
for tool in node npm; do
  command -v $tool >/dev/null || { echo "the browser tests need Node.js 20 or newer ($tool not found)" >&2; exit 1; }
done
for component in rustfmt clippy; do
  if ! cargo ${component/rustfmt/fmt} --version >/dev/null 2>&1; then
    echo "installing the Rust component $component"
    rustup component add $component || { echo "the tests need the Rust component $component (rustup component add $component)" >&2; exit 1; }
  fi
done

# Python peers in the project's own virtual environment (Debian 12 refuses system-wide pip
# installs); the tests find python3 and dicomweb_client on PATH, so the venv goes first.
venv=.venv
[ -x $venv/bin/python3 ] || python3 -m venv $venv
export PATH="$PWD/$venv/bin:$PATH"
if ! python3 -c "import pydicom, pynetdicom, dicomweb_client, hl7, hl7apy" 2>/dev/null || ! command -v dicomweb_client >/dev/null; then
  echo "installing pydicom, pynetdicom, dicomweb-client, python-hl7 and hl7apy in $venv"
  python3 -m pip install -q --disable-pip-version-check pydicom==3.0.2 pynetdicom==3.0.4 \
    dicomweb-client==0.61.2 hl7==0.4.5 hl7apy==1.3.5
fi

# Browser tests: playwright-core, pngjs and OHIF's prebuilt viewer, pinned in tests/browser
# (npm ci's postinstall step fetches OHIF with `npm pack`). Needs node 20 or newer.
browser=tests/browser
if [ ! -f $browser/node_modules/.package-lock.json ] \
  || [ $browser/package-lock.json -nt $browser/node_modules/.package-lock.json ] \
  || [ $browser/package.json -nt $browser/node_modules/.package-lock.json ]; then
  echo "installing the browser test tools (npm ci in $browser)"
  npm ci --prefix $browser --no-audit --no-fund --loglevel=error >/dev/null
fi

# The PostgreSQL index tests create databases named openpacs_test_… on this server (trust
# authentication on 127.0.0.1, as on every development and CI machine); those of earlier runs
# are dropped first.
export PACS_TEST_POSTGRES="${PACS_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! psql "$PACS_TEST_POSTGRES" -Atc "SELECT 1" >/dev/null; then
  echo "the tests need PostgreSQL at $PACS_TEST_POSTGRES (set PACS_TEST_POSTGRES to another server)" >&2
  exit 1
fi
psql "$PACS_TEST_POSTGRES" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'openpacs_test_%'" |
  while read -r db; do psql "$PACS_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS \"$db\""; done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The fuzz crate is its own workspace: formatted and linted on its own.
(cd fuzz && cargo fmt -- --check && cargo clippy --all-targets -- -D warnings)

# cargo prints one "test result" line per test binary; the last one is often a crate's empty
# doc-test run. Sum them all into one closing line so the total is what a reader sees last.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# Every index test again, on PostgreSQL (the engine-neutral statements, dialect and migrations).
PACS_TEST_INDEX=postgres cargo test -p pacs-store --lib 2>&1 | tee -a "$log" || status=$?
# The interop suites (DCMTK, pynetdicom, dicomweb-client, OHIF) again, each server on a fresh
# PostgreSQL database and its own Garage bucket (pacs_testkit::server::ENGINES_VARIABLE).
PACS_TEST_ENGINES=postgres-garage cargo test -p openpacs --test dcmtk --test dicomweb --test ohif --test tenants 2>&1 |
  tee -a "$log" || status=$?
# Every fuzz target for 60 s (a finding fails the run and leaves its input in fuzz/artifacts/).
bash scripts/fuzz.sh 60 || status=1
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

# Slow tier (10 to 20 minutes): the README's run command on a fresh Debian 12 root.
if [ "${PACS_SLOW_TESTS:-}" = 1 ]; then
  bash scripts/fresh-root-check.sh || status=1
  bash scripts/deb-systemd-check.sh || status=1
fi
exit "$status"
