#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a fixed time each with
# libFuzzer and AddressSanitizer, from the committed seed corpus plus what
# earlier runs on this machine found; installs cargo-fuzz if missing.
#
#   scripts/fuzz.sh                       # every target, FUZZ_SECONDS each (20)
#   FUZZ_SECONDS=3600 scripts/fuzz.sh crdt_merge   # a long run of one target
#
# A crash, panic, timeout (FUZZ_TIMEOUT s per input, 10) or out-of-memory
# (FUZZ_RSS_MB, 2048) fails the run: the input is kept under
# $CARGO_TARGET_DIR/fuzz-artifacts/TARGET/ and printed in base64, and
# `cargo fuzz run TARGET FILE` (from fuzz/, with RUSTC_BOOTSTRAP=1) replays it.
# A summary (executions per target) is printed and written to
# $CARGO_TARGET_DIR/fuzz-summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

seconds="${FUZZ_SECONDS:-20}"
timeout_s="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"
tools="$HOME/.cache/tributary-tools"
export PATH="$tools/bin:$PATH"
# cargo-fuzz drives nightly-only rustc flags (sanitizers, coverage passes);
# the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  echo "== installing cargo-fuzz 0.13.2 into $tools"
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

fuzz_dir="$CARGO_TARGET_DIR/fuzz"
echo "== building ${#targets[@]} fuzz targets"
(cd fuzz && cargo fuzz build --target-dir "$fuzz_dir")

summary="$CARGO_TARGET_DIR/fuzz-summary.json"
rows=()
failed=0
for t in "${targets[@]}"; do
  corpus="$CARGO_TARGET_DIR/fuzz-corpus/$t"
  artifacts="$CARGO_TARGET_DIR/fuzz-artifacts/$t/"
  log="$CARGO_TARGET_DIR/fuzz-logs/$t.log"
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  echo "== fuzzing $t for ${seconds}s"
  # New inputs go to the first corpus directory (outside the clone); the
  # committed seeds are read only.
  if (cd fuzz && cargo fuzz run --target-dir "$fuzz_dir" "$t" "$corpus" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_mb" \
      -artifact_prefix="$artifacts" -print_final_stats=1) >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
    tail -n 60 "$log"
    for f in "$artifacts"*; do
      [ -f "$f" ] || continue
      echo "-- failing input $f (base64):"
      base64 -w 0 "$f"; echo
    done
  fi
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || true)
  units=$(find "$corpus" -type f | wc -l)
  printf '%-14s %-6s %12s executions  %6s edges  %6s corpus files\n' "$t" "$status" "${runs:-?}" "${cov:-?}" "$units"
  rows+=("{\"target\":\"$t\",\"status\":\"$status\",\"seconds\":$seconds,\"executions\":${runs:-0},\"edges\":${cov:-0},\"corpus\":$units}")
done
(IFS=,; echo "[${rows[*]}]") > "$summary"
echo "== fuzz summary written to $summary"
exit "$failed"
