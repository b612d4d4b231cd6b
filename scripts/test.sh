#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration
# tests, and (as root) the live-capture test in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Benches run once each as smoke tests first, so the suite's closing line
# is cargo test's own summary.
cargo test --benches --locked
cargo test --locked
