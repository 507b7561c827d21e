#!/usr/bin/env bash
# Runs the chaos tests: tier 1 (deterministic simulation, if present),
# tier 2 (real processes behind fault proxies: 3 and 5 regions) and tier 3
# (crash loop), and prints where their summaries went.
#
# Usage: scripts/chaos.sh [--release] [--real-pace] [SECONDS]
#   SECONDS      length of tier 2's faulty phase per scenario (default 60);
#                tier 3 kills a node SECONDS/2 times (at least 30).
#   --release    the nodes and replctl are release builds (built here; the
#                first release build compiles RocksDB once more, ~13 min
#                cold on 2 cores). CI runs the debug binaries.
#   --real-pace  the issue's fault durations: partitions of 10-30 s,
#                pauses of 5-10 s (TRIBUTARY_CHAOS_PACE=real); CI runs a
#                compressed schedule (1.5-4 s) to fit its time.
#   A soak: scripts/chaos.sh --release --real-pace 1800
# Environment: TRIBUTARY_CHAOS_SEED replays a schedule (printed by every
# run and on failure); TRIBUTARY_SIM_SEEDS sets tier 1's number of seeds;
# TRIBUTARY_CHAOS_SABOTAGE=lost|duplicate|zombie|phantom|diverge makes the
# tier 2/3 writers misbehave on purpose, to watch the checker fail.
#
# Summaries (JSON) and histories: $CARGO_TARGET_DIR/chaos/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

release=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --release) release=1 ;;
    --real-pace) export TRIBUTARY_CHAOS_PACE=real ;;
    *) export TRIBUTARY_CHAOS_SECONDS="$1" ;;
  esac
  shift
done

# The same command shape as CI (scripts/test.sh) so that nothing, RocksDB
# least of all, is rebuilt with other features; it also builds the
# `replicator` and `replctl` binaries the tiers run.
cargo test --workspace --locked --no-run
if [[ $release == 1 ]]; then
  cargo build --release --locked -p tributary-replicator -p tributary-tools
  export TRIBUTARY_BIN_DIR="$CARGO_TARGET_DIR/release"
  echo "== nodes and replctl: release builds from $TRIBUTARY_BIN_DIR"
fi

tests=()
for t in chaos_sim chaos_processes chaos_crash_loop; do
  if [[ -f "tests/tests/$t.rs" ]]; then
    tests+=(--test "$t")
  fi
done
start=$(date +%s)
cargo test --workspace --locked "${tests[@]}" -- --nocapture --test-threads=1
echo "== chaos tests passed in $(( $(date +%s) - start ))s; summaries in $CARGO_TARGET_DIR/chaos/"
ls -1 "$CARGO_TARGET_DIR/chaos/"*.json
