#!/bin/sh
# Runs every check and test of skiff (as root: containers need it).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --test
# A clean checkout gains nothing from incremental artifacts; they would double the disk used.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
