#!/usr/bin/env bash
# End to end in a QEMU guest: a busybox initramfs running the real `latchkey` agent with the
# linux port against the guest's own /etc/shadow, enrolled with the host's real
# `latchkey-server` over loopback-only user networking (guestfwd to 127.0.0.1), real mTLS.
# The host resets the guest account's password and locks it; the script checks the results on
# the server and the effects in the guest (console).
#
# Installs what it needs (Debian: qemu-system-x86 from bookworm-backports, busybox-static; the
# kernel is downloaded and unpacked, not installed). TCG only: no KVM needed. Exit 0 on success.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${LATCHKEY_QEMU_DIR:-$ROOT/target/qemu}
mkdir -p "$WORK"

need_install=()
command -v qemu-system-x86_64 >/dev/null || need_install+=(qemu-system-x86)
[ -x /bin/busybox ] || need_install+=(busybox-static)
if [ ${#need_install[@]} -gt 0 ]; then
  if [ ! -f /etc/apt/sources.list.d/latchkey-backports.sources ]; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/latchkey-backports.sources
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports "${need_install[@]}" >/dev/null
fi

# Kernel and the virtio-net modules, from Debian's package.
if [ ! -f "$WORK/kernel/vmlinuz" ]; then
  rm -rf "$WORK/kernel" && mkdir -p "$WORK/kernel/deb"
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  (cd "$WORK/kernel/deb" && apt-get download -qq "$kpkg" 2>/dev/null && dpkg-deb -x ./*.deb root)
  cp "$WORK"/kernel/deb/root/boot/vmlinuz-* "$WORK/kernel/vmlinuz"
  kv=$(ls "$WORK/kernel/deb/root/lib/modules")
  mkdir -p "$WORK/kernel/modules"
  for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    cp "$(find "$WORK/kernel/deb/root/lib/modules/$kv" -name "$m.ko" | head -1)" "$WORK/kernel/modules/"
  done
  rm -rf "$WORK/kernel/deb"
fi

cargo build --quiet --bin latchkey --bin latchkey-server -p latchkey -p latchkey-server
AGENT=$ROOT/target/debug/latchkey
SERVER=$ROOT/target/debug/latchkey-server

RUN=$(mktemp -d "$WORK/run.XXXXXX")
QEMU_PID=""; SERVER_PID=""
cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
}
trap cleanup EXIT

# The host server; its certificate also names the guest's view of it (10.0.2.100).
"$SERVER" --data "$RUN/server" serve --listen 127.0.0.1:0 --heartbeat 2s --server-name 10.0.2.100 \
  > "$RUN/server.out" 2> "$RUN/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$RUN/server.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/listening on 127.0.0.1://p' "$RUN/server.out")
[ -n "$PORT" ] || { echo "server did not start"; exit 1; }
export LATCHKEY_LOG=warn   # admin commands below: quiet; the server logs to server.log

# The initramfs: busybox, the agent and the shared libraries it links, a real account database.
IMG=$RUN/initramfs
mkdir -p "$IMG"/{bin,sbin,etc/latchkey,proc,sys,dev,run,tmp,var/lib/latchkey,lib/modules,root}
cp /bin/busybox "$IMG/bin/busybox"
for app in sh mount insmod ifconfig route sleep cat grep sed echo poweroff mkdir nc ls seq; do ln -sf busybox "$IMG/bin/$app"; done
cp "$AGENT" "$IMG/bin/latchkey"
for lib in $(ldd "$AGENT" | grep -o '/[^ ]*'); do mkdir -p "$IMG$(dirname "$lib")"; cp -L "$lib" "$IMG$lib"; done
cp "$WORK"/kernel/modules/*.ko "$IMG/lib/modules/"
cp "$RUN/server/ca.pem" "$IMG/etc/latchkey/server-ca.pem"
"$SERVER" --data "$RUN/server" token create > "$IMG/etc/latchkey/token"
chmod 600 "$IMG/etc/latchkey/token"
printf 'root:x:0:0:root:/root:/bin/sh\nkiosk:x:1000:1000::/home/kiosk:/bin/sh\n' > "$IMG/etc/passwd"
printf 'root:*:19000:0:99999:7:::\nkiosk:!:19000:0:99999:7:::\n' > "$IMG/etc/shadow"
chmod 640 "$IMG/etc/shadow"
printf 'ENCRYPT_METHOD YESCRYPT\n' > "$IMG/etc/login.defs"
printf 'ID=latchkey-test\nVERSION_ID="1"\n' > "$IMG/etc/os-release"
echo latchkey-guest > "$IMG/etc/hostname"
cat > "$IMG/etc/latchkey/config.toml" <<CONF
[server]
url = "https://10.0.2.100:$PORT"
ca = "/etc/latchkey/server-ca.pem"
[state]
dir = "/var/lib/latchkey"
[platform]
port = "linux"
linux_user = "kiosk"
linux_root = "/"
lock_command = ["/bin/sh", "-c", "echo LATCHKEY-GUEST-LOCKED > /dev/console"]
[connect]
heartbeat = "2s"
poll_interval = "2s"
[control]
socket = "/run/latchkey/control.sock"
CONF
cat > "$IMG/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  insmod /lib/modules/$m.ko || echo "LATCHKEY-GUEST-INSMOD-FAILED $m"
done
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
route add default gw 10.0.2.2
echo "LATCHKEY-GUEST-UP $(ls /sys/class/net)"
if latchkey enroll --config /etc/latchkey/config.toml --token-file /etc/latchkey/token; then
  echo "LATCHKEY-GUEST-ENROLLED"
fi
latchkey run --config /etc/latchkey/config.toml 2>/dev/console &
last=""
while true; do
  now=$(grep '^kiosk:' /etc/shadow)
  if [ "$now" != "$last" ]; then echo "LATCHKEY-GUEST-SHADOW $now"; last=$now; fi
  sleep 1
done
INIT
chmod +x "$IMG/init"
(cd "$IMG" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$RUN/initramfs.cpio.gz"

# Boot under TCG; the only network the guest has is 10.0.2.100:PORT -> 127.0.0.1:PORT.
qemu-system-x86_64 -m 512 -smp 1 -nographic -no-reboot \
  -kernel "$WORK/kernel/vmlinuz" -initrd "$RUN/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:$PORT-cmd:busybox nc 127.0.0.1 $PORT" \
  -device virtio-net-pci,netdev=n0,romfile= \
  > "$RUN/console.log" 2>&1 < /dev/null &
QEMU_PID=$!

wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what"; echo "--- console"; tail -40 "$RUN/console.log"; exit 1
}
started=$(date +%s)
wait_for "the guest to enroll" 180 grep -q LATCHKEY-GUEST-ENROLLED "$RUN/console.log"
DEVICE=$("$SERVER" --data "$RUN/server" devices --json | sed -n 's/.*"device_id": "\([^"]*\)".*/\1/p' | head -1)
wait_for "the guest agent to check in" 120 grep -q "checked in" "$RUN/console.log"
booted=$(( $(date +%s) - started ))

result() { "$SERVER" --data "$RUN/server" actions --json | tr -d '\n ' | grep -o "{\"command_id\":\"$1\"[^}]*}"; }
done_state() { result "$1" | grep -Eq '"state":"(succeeded|failed|not_supported|rejected|not_now)"'; }

RESET=$("$SERVER" --data "$RUN/server" action reset-passcode --device "$DEVICE" --json)
RESET_ID=$(echo "$RESET" | sed -n 's/.*"command_id":"\([^"]*\)".*/\1/p')
PASS=$(echo "$RESET" | sed -n 's/.*"temporary_passcode":"\([^"]*\)".*/\1/p')
wait_for "the reset result" 120 done_state "$RESET_ID"
result "$RESET_ID" | grep -q '"state":"succeeded"' || { echo "reset failed: $(result "$RESET_ID")"; exit 1; }
wait_for "the new shadow entry" 30 grep -q 'LATCHKEY-GUEST-SHADOW kiosk:\$y\$' "$RUN/console.log"
HASH=$(grep -o 'LATCHKEY-GUEST-SHADOW kiosk:\$y\$[^:]*' "$RUN/console.log" | tail -1 | sed 's/LATCHKEY-GUEST-SHADOW kiosk://')
if python3 -W ignore -c 'import crypt' 2>/dev/null; then
  printf '%s\n%s' "$PASS" "$HASH" | python3 -W ignore -c 'import sys,crypt; p,h=sys.stdin.read().split("\n",1); sys.exit(0 if crypt.crypt(p,h)==h else 1)' \
    || { echo "the guest's shadow hash does not match the temporary passcode"; exit 1; }
fi

LOCK_ID=$("$SERVER" --data "$RUN/server" action lock --device "$DEVICE" --json | sed -n 's/.*"command_id":"\([^"]*\)".*/\1/p')
wait_for "the lock result" 120 done_state "$LOCK_ID"
result "$LOCK_ID" | grep -q '"state":"succeeded"' || { echo "lock failed: $(result "$LOCK_ID")"; exit 1; }
grep -q LATCHKEY-GUEST-LOCKED "$RUN/console.log" || { echo "the guest never ran its lock command"; exit 1; }
if grep -q "$PASS" "$RUN/console.log" "$RUN/server.log"; then echo "the temporary passcode leaked into a log"; exit 1; fi

echo "{\"bench\":\"qemu-e2e\",\"metric\":\"boot_to_checkin\",\"value\":$booted,\"unit\":\"s\",\"baseline\":null,\"ratio\":null}"
echo "qemu e2e: guest enrolled over mTLS, password reset in the guest's /etc/shadow (yescrypt), lock ran: ok"
rm -rf "$RUN"
