//! Tributary benchmarks (see the binaries under `src/bin/`).
