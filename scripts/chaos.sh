#!/usr/bin/env bash
# Runs the chaos tests: tier 1 (deterministic simulation), tier 2 (real
# processes behind fault proxies: 3 and 5 regions) and tier 3 (crash loop),
# and prints where their summaries went. By default as CI runs them
# (scripts/test.sh): release builds of the nodes, the issue's fault pace.
#
# Usage: scripts/chaos.sh [--debug] [--compressed] [SECONDS]
#   SECONDS       length of tier 2's faulty phase per scenario (default
#                 120 at the real pace, 60 compressed); tier 3 kills a node
#                 SECONDS/2 times (at least 30).
#   --debug       the nodes and replctl are the debug builds of the test
#                 profile (no release build: the first one compiles RocksDB
#                 once more, ~13 min cold on 2 cores).
#   --compressed  faults of seconds (partitions of 1.5-4 s) instead of the
#                 issue's pace (partitions of 10-30 s, slowdowns of 5-15 s,
#                 pauses of 5-10 s, a SIGKILL every ~20 s, at least 10).
#   --release, --real-pace: the defaults, accepted for older scripts.
#   A soak: scripts/chaos.sh 1800
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

release=1
export TRIBUTARY_CHAOS_PACE="${TRIBUTARY_CHAOS_PACE:-real}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debug) release=0 ;;
    --compressed) export TRIBUTARY_CHAOS_PACE=compressed ;;
    --release | --real-pace) ;;
    *) export TRIBUTARY_CHAOS_SECONDS="$1" ;;
  esac
  shift
done

# The same command shapes as CI (scripts/test.sh) so that nothing, RocksDB
# least of all, is rebuilt with other features.
cargo test --workspace --locked --no-run
if [[ $release == 1 ]]; then
  cargo build --release --locked -p tributary-replicator -p tributary-tools
  export TRIBUTARY_CHAOS_BIN_DIR="$CARGO_TARGET_DIR/release"
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
