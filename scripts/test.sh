#!/bin/sh
# Runs every check and test of skiff (as root: containers need it).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
