#!/bin/sh
# One command for a fresh Debian 12 machine, as root: install what skiff needs,
# build and install it, load a local busybox image, and start a one-node cluster.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
cargo build --release -p skiff
install -m 0755 target/release/skiff /usr/local/bin/skiff
# No image registry is reachable from here: build busybox locally and load it.
if ! skiff images -q busybox | grep -q .; then
  dir=$(mktemp -d)
  sh scripts/make-test-image.sh "$dir"
  skiff load -i "$dir/busybox-docker.tar"
  rm -rf "$dir"
fi
exec skiff server
