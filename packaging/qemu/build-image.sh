#!/usr/bin/env bash
# Builds (or finds cached) a Debian 12 guest with systemd for the VM test: a debootstrap'd root
# with systemd, udev, dbus, pamtester, qemu-guest-agent and a `kiosk` account whose password
# Debian itself hashed (yescrypt, /etc/shadow root:shadow 0640); Debian's kernel; and a small
# busybox initramfs that loads the virtio and ext4 modules and switches to the disk's systemd.
#
# The result is cached outside the clone, keyed by the hash of this script and the initramfs
# init, in ${LATCHKEY_VM_CACHE:-/var/cache/latchkey-vm}/<hash>/{vmlinuz,initramfs.gz,disk.img}.
# Prints that directory. Needs root and apt (installs debootstrap, busybox-static, e2fsprogs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
HASH=$(cat "$HERE/build-image.sh" "$HERE/initramfs-init" | sha256sum | cut -c1-16)
CACHE=${LATCHKEY_VM_CACHE:-/var/cache/latchkey-vm}/$HASH
if [ -f "$CACHE/ready" ]; then
  echo "$CACHE"
  exit 0
fi
MIRROR=${LATCHKEY_DEBIAN_MIRROR:-http://deb.debian.org/debian}

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v modprobe >/dev/null || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs
started=$(date +%s)

debootstrap --variant=minbase \
  --include=systemd-sysv,udev,dbus,pamtester,login,passwd,qemu-guest-agent,kmod \
  bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log"; exit 1; }

# The guest's configuration.
echo latchkey-guest >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 latchkey-guest\n' >"$ROOTFS/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$ROOTFS/etc/fstab"
mkdir -p "$ROOTFS/etc/systemd/network"
printf '[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' \
  >"$ROOTFS/etc/systemd/network/10-eth0.network"
systemctl --root="$ROOTFS" enable systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1
# Nothing in the guest may reach out or wake up on its own during a test.
systemctl --root="$ROOTFS" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service \
  getty@tty1.service >/dev/null 2>&1 || true
# The account the linux port manages; Debian's own chpasswd hashes its first password.
chroot "$ROOTFS" useradd --create-home --shell /bin/bash kiosk
echo 'kiosk:Initial-Pass-4821' | chroot "$ROOTFS" chpasswd
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/*

# Debian's kernel, and the modules the initramfs loads, in dependency order.
mkdir -p "$WORK/kernel"
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
(cd "$WORK/kernel" && apt-get download -qq "$KPKG" 2>/dev/null && dpkg-deb -x ./*.deb root)
KV=$(ls "$WORK/kernel/root/lib/modules")
depmod --basedir "$WORK/kernel/root" "$KV"
INITRD=$WORK/initramfs
mkdir -p "$INITRD"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$INITRD/bin/busybox"
for app in sh mount umount insmod switch_root echo cat sleep; do ln -s busybox "$INITRD/bin/$app"; done
for m in virtio_pci virtio_blk virtio_net virtio_console ext4 crc32c_generic; do
  modprobe --dirname "$WORK/kernel/root" --set-version "$KV" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r ko; do
  cp "$ko" "$INITRD/lib/modules/"
  basename "$ko" >>"$INITRD/lib/modules/order"
done
install -m 0755 "$HERE/initramfs-init" "$INITRD/init"

mkdir -p "$CACHE.tmp"
cp "$WORK/kernel/root/boot/vmlinuz-$KV" "$CACHE.tmp/vmlinuz"
(cd "$INITRD" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$CACHE.tmp/initramfs.gz"
truncate -s 3G "$CACHE.tmp/disk.img"
mkfs.ext4 -q -F -L latchkey-root -d "$ROOTFS" "$CACHE.tmp/disk.img"
echo "built in $(( $(date +%s) - started ))s from $MIRROR, kernel $KV" >"$CACHE.tmp/ready"
rm -rf "$CACHE"
mv "$CACHE.tmp" "$CACHE"
echo "$CACHE"
