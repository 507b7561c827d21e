#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what they need.
# Usage: scripts/test.sh            (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== release builds of replicator and replctl: the chaos tiers' nodes"
cargo build --release --locked -p tributary-replicator -p tributary-tools
export TRIBUTARY_CHAOS_BIN_DIR="$CARGO_TARGET_DIR/release"
# Tier 2 under the issue's fault durations (partitions of 10-30 s).
export TRIBUTARY_CHAOS_PACE="${TRIBUTARY_CHAOS_PACE:-real}"
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzz targets, ${FUZZ_SECONDS:-20}s each"
scripts/fuzz.sh
echo "== all checks passed in $(( $(date +%s) - start ))s"
