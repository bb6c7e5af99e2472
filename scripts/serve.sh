#!/usr/bin/env bash
# Builds and runs the server with its embedded defaults (DICOM 127.0.0.1:11112 as OPENPACS,
# HTTP 127.0.0.1:8080, data under ./openpacs-data); extra arguments go to `openpacs serve`.
# On a fresh Debian machine the build needs what CharLS (JPEG-LS) and SQLite are compiled
# with: cmake, make and a C/C++ compiler. They are installed when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v g++ >/dev/null || missing+=(g++)
command -v cc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the build needs ${missing[*]}: install them (sudo apt-get install ${missing[*]}) or run this as root" >&2
    exit 1
  fi
  echo "installing the build prerequisites: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "the build needs a Rust toolchain (1.85 or newer): see https://rustup.rs" >&2
  exit 1
fi
cargo build --release -p openpacs
exec target/release/openpacs serve "$@"
