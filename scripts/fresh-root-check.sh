#!/usr/bin/env bash
# The README's run command on a fresh Debian 12 root, the way it once failed (issue 15 §8):
# debootstrap a minimal bookworm (with CA certificates, as any server has, for crates.io), copy this checkout into it (committed files only), run
# `bash scripts/serve.sh` there first — it must install what the build needs by itself — and
# check that the server answers a real C-ECHO from DCMTK on this machine.
#
# Slow (debootstrap, apt, a cold release build: 10 to 20 minutes on 2 cores), so the test
# command runs it only with PACS_SLOW_TESTS=1. Needs root (debootstrap, chroot, mounts).
# The Rust toolchain is this machine's, bind-mounted read-only: none other can be fetched here.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

[ "$(id -u)" -eq 0 ] || { echo "fresh-root-check needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
[ -x /usr/bin/echoscu ] || { echo "fresh-root-check needs DCMTK's echoscu (bash scripts/test.sh installs it)" >&2; exit 1; }

root=${FRESH_ROOT:-/var/tmp/openpacs-fresh-root}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
port=$((20000 + RANDOM % 20000))
log=$(mktemp)

cleanup() {
  set +e
  [ -f "$root/tmp/serve.pid" ] && kill -- -"$(cat "$root/tmp/serve.pid")" 2>/dev/null
  sleep 1
  for m in opt/cargo/registry opt/cargo/bin opt/rustup dev/pts dev proc sys; do
    mountpoint -q "$root/$m" && umount -l "$root/$m"
  done
  rm -f "$log"
}
trap cleanup EXIT

# A pristine root every time: a previous run's apt installs must not help this one.
if [ ! -f "$root.tar" ]; then
  rm -rf "$root"
  echo "debootstrap: a minimal Debian 12 (bookworm) in $root"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$root" http://deb.debian.org/debian >"$log" 2>&1 \
    || { tail -20 "$log"; exit 1; }
  tar -C "$root" -cf "$root.tar" .
else
  rm -rf "$root" && mkdir -p "$root" && tar -C "$root" -xf "$root.tar"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"

mkdir -p "$root/opt/rustup" "$root/opt/cargo/bin" "$root/opt/cargo/registry" "$root/src"
mount --bind "$rustup_home" "$root/opt/rustup" && mount -o remount,bind,ro "$root/opt/rustup"
mount --bind "$cargo_home/bin" "$root/opt/cargo/bin" && mount -o remount,bind,ro "$root/opt/cargo/bin"
# crates.io downloads are shared with the host's cache (read-write: cargo writes its index).
mkdir -p "$cargo_home/registry" && mount --bind "$cargo_home/registry" "$root/opt/cargo/registry"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
git -C "$repo" archive HEAD | tar -C "$root/src" -xf -

echo "running the README's run command in the fresh root (DICOM port $port)"
chroot "$root" /usr/bin/env -i HOME=/root PATH=/opt/cargo/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo CARGO_TARGET_DIR=/src/target \
  /bin/bash -c "cd /src && setsid bash scripts/serve.sh --dicom-port $port --http-port $((port + 1)) \
    --hl7-port $((port + 2)) --data-dir /tmp/data >/tmp/serve.log 2>&1 & echo \$! >/tmp/serve.pid"

# Built and listening within 40 minutes, or its log tells why not.
for _ in $(seq 1 2400); do
  if TCP_NODELAY=1 /usr/bin/echoscu -aec OPENPACS 127.0.0.1 "$port" 2>/dev/null; then
    echo "fresh root: scripts/serve.sh built and served; C-ECHO to 127.0.0.1:$port succeeded"
    grep -E "installing the build prerequisites|Finished" "$root/tmp/serve.log" || true
    exit 0
  fi
  if ! kill -0 "$(cat "$root/tmp/serve.pid")" 2>/dev/null; then
    echo "fresh root: scripts/serve.sh exited before serving:" >&2
    tail -30 "$root/tmp/serve.log" >&2
    exit 1
  fi
  sleep 1
done
echo "fresh root: no C-ECHO answer after 40 minutes" >&2
tail -30 "$root/tmp/serve.log" >&2
exit 1
