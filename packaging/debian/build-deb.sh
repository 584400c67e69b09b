#!/usr/bin/env bash
# Builds target/debian/latchkey_<version>_<arch>.deb: the Linux device build of the agent (without
# the Apple MDM dialect: `--no-default-features`), its systemd unit, /etc/latchkey/config.toml (a
# conffile) and config.d/, man pages and bash completion. The device build has no `man` or
# `completions` generators (feature `docs`), so they come from a debug build with the same
# features plus `docs`: the same command line, so the pages describe the binary that ships.
#
# dpkg-deb on a staged tree rather than cargo-deb: dpkg-dev is already on any Debian machine that
# builds Rust (no 2-minute tool compile in CI), and the maintainer scripts — enable but do not
# start before enrollment, keep state on remove, delete it on purge — are ours to read in
# packaging/debian/, not generated. Dependencies come from dpkg-shlibdeps, as debhelper does.
#
# Usage: build-deb.sh [OUTDIR]   (LATCHKEY_BIN=path and LATCHKEY_DOCS_BIN=path skip the cargo builds)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:-$ROOT/target/debian}
BIN=${LATCHKEY_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --profile device --locked --quiet -p latchkey --bin latchkey --no-default-features
  BIN=$ROOT/target/device/latchkey
fi
DOCS_BIN=${LATCHKEY_DOCS_BIN:-}
if [ -z "$DOCS_BIN" ]; then
  cargo build --locked --quiet -p latchkey --bin latchkey --no-default-features --features docs
  DOCS_BIN=$ROOT/target/debug/latchkey
fi
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
P=$STAGE/latchkey
DOC=$P/usr/share/doc/latchkey

install -D -m 0755 "$BIN" "$P/usr/bin/latchkey"
# The release profile strips symbols; the toolchain's .comment section is all that is left.
objcopy --remove-section=.comment "$P/usr/bin/latchkey"
install -D -m 0644 packaging/systemd/latchkey.service "$P/lib/systemd/system/latchkey.service"
install -D -m 0644 packaging/config.toml "$P/etc/latchkey/config.toml"
install -d -m 0755 "$P/etc/latchkey/config.d"
install -d -m 0755 "$P/usr/share/man/man1"
"$DOCS_BIN" man "$STAGE/man" >/dev/null
for page in "$STAGE"/man/*.1; do
  gzip -9n -c "$page" > "$P/usr/share/man/man1/$(basename "$page").gz"
done
install -d -m 0755 "$P/usr/share/bash-completion/completions"
"$DOCS_BIN" completions bash > "$P/usr/share/bash-completion/completions/latchkey"
chmod 0644 "$P/usr/share/bash-completion/completions/latchkey"
install -D -m 0644 packaging/debian/copyright "$DOC/copyright"
gzip -9n -c packaging/debian/changelog > "$DOC/changelog.gz"
chmod 0644 "$DOC/changelog.gz"

install -d -m 0755 "$P/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$P/DEBIAN/$script"
done
printf '/etc/latchkey/config.toml\n' > "$P/DEBIAN/conffiles"

# Shared-library dependencies, the way dh_shlibdeps computes them.
mkdir -p "$STAGE/shlibs/debian"
printf 'Source: latchkey\n\nPackage: latchkey\nArchitecture: any\n' > "$STAGE/shlibs/debian/control"
DEPENDS=$(cd "$STAGE/shlibs" && dpkg-shlibdeps -O "$P/usr/bin/latchkey" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
SIZE=$(du -sk --exclude=DEBIAN "$P" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@DEPENDS@/$DEPENDS/" -e "s/@SIZE@/$SIZE/" \
  packaging/debian/control.in > "$P/DEBIAN/control"
(cd "$P" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$P/DEBIAN/md5sums"
chmod 0644 "$P/DEBIAN/control" "$P/DEBIAN/conffiles" "$P/DEBIAN/md5sums"

mkdir -p "$OUT"
DEB=$OUT/latchkey_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$P" "$DEB" >/dev/null
echo "$DEB"
