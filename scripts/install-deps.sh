#!/bin/sh
# Installs the Debian packages skiff needs (and, with --test, those its tests use).
# Idempotent: apt runs only when something is missing.
set -eu
runtime="pkg-config protobuf-compiler libseccomp-dev nftables iproute2 busybox-static umoci skopeo"
test_pkgs="docker-registry etcd-server etcd-client runc podman buildah hyperfine wrk dnsperf python3-pip strace"
want="$runtime"
[ "${1:-}" = "--test" ] && want="$runtime $test_pkgs"
missing=""
for p in $want; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
  # The official Python client. Debian's python refuses pip installs into the
  # system (PEP 668), so fall back accordingly.
  python3 -c 'import kubernetes' 2>/dev/null \
    || python3 -m pip install -q kubernetes 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes
fi
