#!/usr/bin/env bash
# Runs the embedded demo (no AWS, no database needed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
exec cargo run --quiet --locked -p tributary-replicator --bin replicator -- demo "$@"
