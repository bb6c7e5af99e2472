#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and interop tests against real DICOM
# peers (DCMTK, pynetdicom). Installs the peer tools it needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/storescu ] || missing+=(dcmtk)
[ -x /usr/bin/cmake ] || missing+=(cmake)        # CharLS (JPEG-LS) builds with cmake
[ -x /usr/bin/chromium ] || missing+=(chromium)  # browser tests (OHIF, web UI)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c "import pydicom, pynetdicom, dicomweb_client" 2>/dev/null || ! command -v dicomweb_client >/dev/null; then
  echo "installing pydicom, pynetdicom and dicomweb-client"
  python3 -m pip install -q --disable-pip-version-check pydicom==3.0.2 pynetdicom==3.0.4 dicomweb-client==0.61.2
fi

if ! python3 -c "import hl7, hl7apy" 2>/dev/null; then
  echo "installing python-hl7 and hl7apy"
  python3 -m pip install -q --disable-pip-version-check hl7==0.4.5 hl7apy==1.3.5
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

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# cargo prints one "test result" line per test binary; the last one is often a crate's empty
# doc-test run. Sum them all into one closing line so the total is what a reader sees last.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
