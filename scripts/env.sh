# Sourced by the scripts: one cargo target dir outside the clone, so that
# RocksDB's C++ build (7–10 min cold on 2 cores) is paid once per machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# No incremental compilation in the scripts: CI builds each clean clone
# once, and the cached target dir's incremental sessions only grew (they
# reached 40 GB on a development machine and filled its disk).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# moto's server (AWS emulator) for the DynamoDB sidecar's tests; installed by
# scripts/setup.sh.
export TRIBUTARY_MOTO_SERVER="${TRIBUTARY_MOTO_SERVER:-${TRIBUTARY_VENV:-$HOME/.cache/tributary-venv}/bin/moto_server}"
# PostgreSQL 15's server binaries (initdb, postgres) for the PostgreSQL
# sidecar's tests; installed with wal2json by scripts/setup.sh.
export TRIBUTARY_PG_BIN="${TRIBUTARY_PG_BIN:-/usr/lib/postgresql/15/bin}"
