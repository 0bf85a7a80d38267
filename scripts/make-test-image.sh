#!/bin/sh
# Builds the busybox test image with independent tools (umoci, skopeo), never with skiff.
# Usage: make-test-image.sh OUTDIR
# Produces: OUTDIR/oci (OCI layout, tag "busybox"), OUTDIR/busybox-docker.tar
# (docker-archive, busybox:latest) and OUTDIR/busybox-oci.tar (oci-archive).
set -eu
out=${1:?usage: make-test-image.sh OUTDIR}
busybox=$(command -v busybox || echo /bin/busybox)
[ -x "$busybox" ] || { echo "busybox-static is not installed (apt-get install busybox-static)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$out/oci.tmp"
umoci new --image "$out/oci.tmp:busybox"
umoci unpack --image "$out/oci.tmp:busybox" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/home/app" "$root/var/www"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n' > "$root/etc/group"
chown 1000:1000 "$root/home/app"
echo 'hello from skiff' > "$root/var/www/index.html"
umoci repack --image "$out/oci.tmp:busybox" "$work/bundle"
umoci config --image "$out/oci.tmp:busybox" --config.cmd sh \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --architecture amd64 --os linux
umoci gc --layout "$out/oci.tmp"
rm -rf "$out/oci" && mv "$out/oci.tmp" "$out/oci"
rm -f "$out/busybox-docker.tar" "$out/busybox-oci.tar"
skopeo copy -q "oci:$out/oci:busybox" "docker-archive:$out/busybox-docker.tar:busybox:latest"
skopeo copy -q "oci:$out/oci:busybox" "oci-archive:$out/busybox-oci.tar:busybox:latest"
