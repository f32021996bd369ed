#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20, what CI runs) and fails if any finds a
# crash, a panic, a timeout or memory beyond 2 GiB. `fuzz/run.sh 600` is the 10-minute local
# run. Builds first (nightly + cargo-fuzz; installs cargo-fuzz if missing), seeds from
# fixtures/ (seed.sh). Environment: FUZZ_TARGETS="pickle zip" to run some targets only,
# FUZZ_JOBS=2 to run two targets at a time (default 1), FUZZ_NICE=19 to run under nice,
# FUZZ_SANITIZER=none to build without AddressSanitizer (faster to build; memory errors in
# unsafe code go unseen, huge allocations are caught by the RSS limit only),
# FUZZ_NO_BUILD=1 to run the binaries already built, FUZZ_BUILD_ONLY=1 to build and stop (CI
# builds under nice beside its tests, then runs with FUZZ_NO_BUILD), FUZZ_KEEP_GOING=1 to go on
# after a crash (libFuzzer's fork mode: every crash is saved, the run lasts SECONDS; for long
# local runs).
# Crashes land in fuzz/artifacts/<target>/, logs in fuzz/logs/<target>.log. Every run first
# replays fuzz/regressions/<target>/ (committed inputs that once crashed a target).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
jobs=${FUZZ_JOBS:-1}
nice=(nice -n "${FUZZ_NICE:-0}")
targets=(${FUZZ_TARGETS:-pickle zip safetensors sharded_index gguf numpy onnx})
start=$(date +%s)
say() { echo "-- [fuzz $(( $(date +%s) - start ))s] $*"; }

# Longest input per target: a little above its largest seed (onnx: the 250 KB encoders).
max_len() {
  case $1 in
    onnx) echo 262144 ;;
    sharded_index) echo 16384 ;;
    *) echo 65536 ;;
  esac
}

cargo +nightly --version >/dev/null 2>&1 || { echo "fuzz: no nightly toolchain (rustup toolchain install nightly)"; exit 1; }
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  "${nice[@]}" cargo install cargo-fuzz --locked --quiet
fi
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  say "build (nightly, sanitizer ${FUZZ_SANITIZER:-address}, debug assertions and overflow checks)"
  # (`cargo fuzz build` takes one target or all of them.)
  for t in "${targets[@]}"; do
    "${nice[@]}" cargo +nightly fuzz build -a -s "${FUZZ_SANITIZER:-address}" "$t" 2>&1 \
      | { grep -vE '^ +(Compiling|Downloaded|Downloading|Finished|Locking|Adding|Updating) ' || true; }
  done
  say "built"
fi
[ -n "${FUZZ_BUILD_ONLY:-}" ] && exit 0
bin=target/x86_64-unknown-linux-gnu/release
say "seed corpora"
./seed.sh >/dev/null

scratch=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/ferry-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p logs

keep_going=()
[ -n "${FUZZ_KEEP_GOING:-}" ] && keep_going=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)

run_one() {
  local t=$1 rc=0 t0
  mkdir -p "artifacts/$t" "corpus/$t"
  touch "logs/$t.stamp"
  t0=$(date +%s)
  local dirs=("corpus/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  TMPDIR="$scratch" "${nice[@]}" "$bin/$t" "${dirs[@]}" "${keep_going[@]}" \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$t")" \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"logs/$t.log" 2>&1 || rc=$?
  local execs cov found
  # (No `#N` line when an input of the corpus or of regressions/ crashes while loading.)
  execs=$(grep -oE '^#[0-9]+' "logs/$t.log" | tail -1 | tr -d '#' || true)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "logs/$t.log" | tail -1 || true)
  # Inputs saved by this run (slow-unit-* are notes, not failures).
  found=$(find "artifacts/$t" -type f -newer "logs/$t.stamp" ! -name 'slow-unit-*' | sort)
  if [ "$rc" -eq 0 ] && [ -z "$found" ]; then
    say "$t: clean, $(( $(date +%s) - t0 ))s, ${execs:-?} runs, ${cov:-no stats}"
    return 0
  fi
  say "$t: FAILED (exit $rc) after ${execs:-?} runs, $(( $(date +%s) - t0 ))s; log fuzz/logs/$t.log"
  { grep -E -A1 'ERROR: libFuzzer|panicked at|thread .* has overflowed' "logs/$t.log" || true; } \
    | grep -vE '^--$|^(MS|artifact_prefix|Base64|SUMMARY)|^ +#[0-9]' | sed -E 's/\((([0-9]+)|[^)]*pid[^)]*)\)//; s/==[0-9]+==//' \
    | sort | uniq -c | sort -rn | head -12 | sed 's/^/   /'
  grep -E '^Running: ' "logs/$t.log" | tail -1 | sed 's/^/   last input: /' || true
  echo "$found" | sed '/^$/d; s/^/   fuzz\//'
  return 1
}

failed=()
pids=()
names=()
for t in "${targets[@]}"; do
  run_one "$t" & pids+=($!) names+=("$t")
  if [ "${#pids[@]}" -ge "$jobs" ]; then
    wait "${pids[0]}" || failed+=("${names[0]}")
    pids=("${pids[@]:1}") names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed+=("${names[$i]}"); done

if [ "${#failed[@]}" -gt 0 ]; then
  say "crashes in: ${failed[*]} (inputs under fuzz/artifacts/; replay one with fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE)"
  exit 1
fi
say "all ${#targets[@]} targets clean for ${secs}s each"
