#!/usr/bin/env bash
# The Debian package under a real systemd (issue 15 §8). crates/openpacs/tests/debian_package.rs
# checks the package where systemd is not PID 1 (containers, CI); only systemd can show that
# the hardened unit really runs. So: boot a minimal Debian 12 with systemd-nspawn (its own
# network namespace: nothing listens on the host), `dpkg -i` the package there, and check
#   - postinst enabled and started the unit; it runs as openpacs, with no capability,
#     NoNewPrivileges and a seccomp filter;
#   - under that sandbox: C-ECHO, C-STORE, C-FIND, a rendered image (DCMTK, curl);
#   - the first account as README.Debian says; HTTP then needs a login;
#   - a configuration error stops the unit without a restart loop, the journal names it;
#   - port 104 is refused, then served with the drop-in README.Debian documents;
#   - purge stops it and keeps the archive; installing again serves the same archive.
# Slow (debootstrap 1 to 2 minutes the first time, and a release build unless given a .deb):
# run by test.sh with PACS_SLOW_TESTS=1. Needs root.
# Usage: scripts/deb-systemd-check.sh [openpacs_VERSION_ARCH.deb]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

[ "$(id -u)" -eq 0 ] || { echo "deb-systemd-check needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
root=${DEB_SYSTEMD_ROOT:-/var/tmp/openpacs-deb-systemd-root}
nspawn_pid=
cleanup() {
  set +e
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid"  # systemd-nspawn powers the container off
    for _ in $(seq 1 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$nspawn_pid" 2>/dev/null
  fi
  rm -rf "$work" "$root"
}
trap cleanup EXIT
fail() { echo "deb-systemd-check: $*" >&2; exit 1; }

deb=${1:-}
if [ -z "$deb" ]; then
  echo "building the package (cargo deb -p openpacs, release)"
  (cd "$repo" && cargo deb -p openpacs --fast -o "$work/") >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log"; fail "cargo deb failed"; }
  deb=$(ls "$work"/openpacs_*.deb)
fi
[ -f "$deb" ] || fail "no package $deb"

# A pristine root every time, from a cached tarball: systemd, and what the checks call.
if [ ! -f "$root.tar" ]; then
  rm -rf "$root"
  echo "debootstrap: a minimal Debian 12 (bookworm) with systemd in $root"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,adduser,libstdc++6,dcmtk,curl \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; fail "debootstrap failed"; }
  tar -C "$root" -cf "$root.tar" .
else
  rm -rf "$root" && mkdir -p "$root" && tar -C "$root" -xf "$root.tar"
fi
mkdir -p "$root/root/fixtures"
cp "$deb" "$root/root/openpacs.deb"
for f in ct_explicit_le.dcm cr_explicit_le.dcm ct_series_a_1_explicit_le.dcm; do
  cp "$repo/tests/fixtures/valid/$f" "$root/root/fixtures/"
done

systemd-nspawn -q -D "$root" --boot --register=no --keep-unit --private-network \
  --machine=openpacs-deb-check </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!
leader=
for _ in $(seq 1 100); do
  leader=$(cat "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null | awk '{print $1}')
  [ -n "$leader" ] && break
  sleep 0.2
done
[ -n "$leader" ] || { cat "$work/console.log"; fail "the container did not start"; }
# Runs a command in the container, with a clean environment as a root shell there has.
ct() { nsenter -t "$leader" -a /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C "$@"; }
for _ in $(seq 1 120); do
  state=$(ct systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.5
done
case "$state" in running|degraded) ;; *) tail -20 "$work/console.log"; fail "systemd did not boot ($state)";; esac
echo "systemd $(ct systemctl --version | head -1 | awk '{print $2}') booted in the container"

# Waits until the unit is in state $1 (active, failed), at most $2 seconds.
wait_state() {
  for _ in $(seq 1 $(($2 * 5))); do
    [ "$(ct systemctl is-active openpacs 2>/dev/null || true)" = "$1" ] && return 0
    sleep 0.2
  done
  ct journalctl -u openpacs --no-pager -n 20 >&2
  fail "openpacs.service is $(ct systemctl is-active openpacs) after $2 s, not $1"
}
echo_ok() { ct env TCP_NODELAY=1 echoscu -aec OPENPACS 127.0.0.1 "$1"; }
wait_echo() {
  for _ in $(seq 1 100); do echo_ok "$1" 2>/dev/null && return 0; sleep 0.2; done
  ct journalctl -u openpacs --no-pager -n 20 >&2
  fail "no C-ECHO answer on port $1"
}
study_count() {
  ct findscu -S -aec OPENPACS -k QueryRetrieveLevel=STUDY -k StudyInstanceUID 127.0.0.1 11112 2>&1 \
    | grep -c '(0020,000d)' || true
}

ct dpkg -i /root/openpacs.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i failed"; }
[ "$(ct systemctl is-enabled openpacs)" = enabled ] || fail "the unit is not enabled"
wait_state active 30
wait_echo 11112
echo "dpkg -i: openpacs.service enabled, active, C-ECHO answered on 11112"

pid=$(ct systemctl show -p MainPID --value openpacs)
status=$(ct cat "/proc/$pid/status")
uid=$(ct id -u openpacs)
grep -qP "^Uid:\t$uid\t" <<<"$status" || fail "the service does not run as openpacs: $(grep Uid <<<"$status")"
for want in 'CapEff:\t0000000000000000' 'CapBnd:\t0000000000000000' 'NoNewPrivs:\t1' 'Seccomp:\t2'; do
  grep -qP "^$want$" <<<"$status" || fail "the service's /proc status lacks $want"
done
echo "the service: uid $uid (openpacs), no capability, NoNewPrivileges, seccomp filter"

ct sh -c 'storescu -aec OPENPACS 127.0.0.1 11112 /root/fixtures/*.dcm' || fail "storescu failed"
[ "$(study_count)" -eq 3 ] || fail "C-FIND after storing 3 studies found $(study_count)"
instances=$(ct curl -sf http://127.0.0.1:8080/dicom-web/instances) || fail "QIDO-RS failed"
read -r study series instance < <(python3 -c '
import json, sys
i = json.loads(sys.argv[1])[0]
print(*(i[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018")))' "$instances")
code=$(ct curl -s -o /dev/null -w '%{http_code} %{content_type}' -H 'Accept: image/jpeg' \
  "http://127.0.0.1:8080/dicom-web/studies/$study/series/$series/instances/$instance/rendered")
[ "$code" = "200 image/jpeg" ] || fail "rendered image: $code"
echo "under the sandbox: 3 studies stored and found, a rendered image served"

echo 'a-long-enough-password' | ct runuser -u openpacs -- openpacs --config /etc/openpacs/openpacs.toml \
  user add admin --role admin >/dev/null || fail "README.Debian's user add failed"
anon=$(ct curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/dicom-web/studies)
auth=$(ct curl -s -o /dev/null -w '%{http_code}' -u admin:a-long-enough-password http://127.0.0.1:8080/dicom-web/studies)
[ "$anon $auth" = "401 200" ] || fail "after user add: $anon without login, $auth with it (want 401 200)"
echo "first account added as README.Debian says: HTTP 401 without login, 200 with it"

config=/etc/openpacs/openpacs.toml
ct cp "$config" /root/openpacs.toml.orig
ct sed -i 's/^dicom_port = 11112$/dicom_port = "eleven"/' "$config"
ct systemctl restart openpacs || true
wait_state failed 10
sleep 6  # past RestartSec: a restart would show now
[ "$(ct systemctl is-active openpacs || true)" = failed ] || fail "a configuration error is restarted"
[ "$(ct systemctl show -p NRestarts --value openpacs)" = 0 ] || fail "a configuration error is restarted"
ct journalctl -u openpacs --no-pager -n 5 | grep -q 'dicom_port' || fail "the journal does not name dicom_port"
echo "configuration error: unit failed, not restarted, the journal names dicom_port"

ct sed -i 's/^dicom_port = "eleven"$/dicom_port = 104/' "$config"
ct systemctl reset-failed openpacs
ct systemctl restart openpacs || true
for _ in $(seq 1 50); do
  ct journalctl -u openpacs --no-pager -n 10 | grep -q 'cannot listen for DICOM on 127.0.0.1:104: Permission denied' && break
  sleep 0.2
done
ct journalctl -u openpacs --no-pager -n 10 | grep -q 'Permission denied' || fail "port 104 was not refused"
ct mkdir -p /etc/systemd/system/openpacs.service.d
ct sh -c 'printf "[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" \
  >/etc/systemd/system/openpacs.service.d/port104.conf'
ct systemctl daemon-reload
ct systemctl restart openpacs
wait_state active 30
wait_echo 104
echo "port 104: refused without a capability, served with README.Debian's drop-in"
ct rm -r /etc/systemd/system/openpacs.service.d
ct cp /root/openpacs.toml.orig "$config"
ct systemctl daemon-reload
ct systemctl restart openpacs
wait_state active 30
wait_echo 11112

start=$(date +%s.%N)
ct dpkg --purge openpacs >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg --purge failed"; }
took=$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo '?')
[ "$(ct systemctl is-active openpacs || true)" != active ] || fail "still running after purge"
ct test ! -e /usr/bin/openpacs -a ! -e /etc/openpacs || fail "binary or configuration left after purge"
ct test -f /var/lib/openpacs/index.sqlite || fail "purge deleted the archive"
grep -q '/var/lib/openpacs was NOT deleted' "$work/purge.log" || fail "purge does not say where the archive is"
echo "dpkg --purge (${took} s): service stopped, binary and configuration gone, archive kept"

ct dpkg -i /root/openpacs.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i again failed"; }
wait_state active 30
wait_echo 11112
[ "$(study_count)" -eq 3 ] || fail "reinstalled, the archive shows $(study_count) studies, not 3"
auth=$(ct curl -s -o /dev/null -w '%{http_code}' -u admin:a-long-enough-password http://127.0.0.1:8080/dicom-web/studies)
[ "$auth" = 200 ] || fail "reinstalled, the kept account gets $auth"
echo "installed again: the kept archive is served (3 studies, the account works)"
echo "deb-systemd-check: passed"
