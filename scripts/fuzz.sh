#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS seconds each (default 60), two at a
# time, after one build. Fails when any target finds a crash, a hang (an input taking over
# 10 s) or an allocation out of proportion to its input (one over 128 MiB, or more than
# 512 MiB live or resident); the input is left in fuzz/artifacts/<target>/. Prints executions
# and coverage per target. Needs cargo-fuzz (scripts/test.sh installs it).
#   bash scripts/fuzz.sh 60        the test command's short run
#   bash scripts/fuzz.sh 1800 1    a campaign: 30 minutes per target, one at a time
#   FUZZ_TARGETS="dicom_json dataset_check" bash scripts/fuzz.sh 1800 2    some targets only
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
parallel=${2:-2}

# cargo fuzz passes the coverage instrumentation flags (-Cpasses=sancov-module, …) that only
# a nightly compiler takes; RUSTC_BOOTSTRAP lets the stable one take them. No sanitizer: the
# code under test forbids `unsafe`, and the fuzz crate bounds allocations itself (fuzz/src).
export RUSTC_BOOTSTRAP=1
flags=(--fuzz-dir fuzz --sanitizer none --release --debug-assertions --codegen-units 16)
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz build: $(($(date +%s) - start)) s"
bin=fuzz/target/x86_64-unknown-linux-gnu/release
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run() {
  local target=$1
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  # The corpus directory (gitignored) collects what the run finds; the seeds stay as they are.
  nice -n 10 "$bin/$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
    -max_total_time="$seconds" -rss_limit_mb=512 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$logs/$target.log" 2>&1
}

status=0
targets=${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz)}
pids=()
names=()
for target in $targets; do
  run "$target" &
  pids+=($!)
  names+=("$target")
  if [ ${#pids[@]} -ge "$parallel" ]; then
    wait "${pids[0]}" || true
    pids=("${pids[@]:1}")
  fi
done
wait || true

for target in $targets; do
  log=$logs/$target.log
  execs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
  final=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|pulse|NEW|REDUCE)' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$final")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$final")
  corpus=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$final")
  finding=$(grep -E '^==[0-9]+== ERROR: libFuzzer|^SUMMARY: libFuzzer|panicked at|==fuzz==|Test unit written to' "$log" || true)
  if [ -n "$finding" ] || [ -z "$execs" ]; then
    status=1
    echo "fuzz $target: FINDING after ${execs:-?} executions"
    grep -E 'panicked at|==fuzz==|ERROR: libFuzzer|Test unit written to' "$log" | head -5 | sed 's/^/  /'
    [ -n "$finding" ] || tail -20 "$log" | sed 's/^/  /'
  else
    echo "fuzz $target: ${execs} executions in ${seconds} s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corpus:-?}, no finding"
  fi
done
echo "fuzz: $(wc -w <<<"$targets") targets, $(($(date +%s) - start)) s in all"
exit "$status"
