#!/usr/bin/env bash
# The VM test: builds the .deb, builds (or reuses) the Debian guest image, boots it under QEMU
# (TCG) with loopback-only networking to the host's latchkey-server, and drives every step in
# packaging/qemu/vm_test.py. Needs root and apt (installs QEMU from bookworm-backports — the
# bookworm build conflicts with the qemu-utils these machines carry — busybox-static for the
# guestfwd relay, python3 for the driver).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
started=$(date +%s)

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ ! -f /etc/apt/sources.list.d/latchkey-backports.sources ]; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      >/etc/apt/sources.list.d/latchkey-backports.sources
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports "${need[@]}" >/dev/null
fi

DEB=$(bash packaging/debian/build-deb.sh)
cargo build --locked --quiet -p latchkey-server --bin latchkey-server
image_started=$(date +%s)
IMAGE=$(bash packaging/qemu/build-image.sh)
echo "{\"bench\":\"vm-test\",\"metric\":\"image_ready\",\"value\":$(( $(date +%s) - image_started )),\"unit\":\"s\",\"baseline\":null,\"ratio\":null,\"note\":\"$(cat "$IMAGE/ready")\"}"
/usr/bin/python3 packaging/qemu/vm_test.py --image "$IMAGE" --deb "$DEB" --server "$ROOT/target/debug/latchkey-server" "$@"
echo "{\"bench\":\"vm-test\",\"metric\":\"script_total\",\"value\":$(( $(date +%s) - started )),\"unit\":\"s\",\"baseline\":null,\"ratio\":null}"
