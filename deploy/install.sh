#!/usr/bin/env bash
# Installs mpcd as a systemd service, or removes exactly what an install put there.
#
#   deploy/install.sh               build in release mode, install, enable and start the service
#   deploy/install.sh --uninstall   stop and disable the service, remove what was installed
#   deploy/install.sh --no-build    install the binaries already in .build/release
#
# Installs /usr/local/lib/mpcd/mpcd (linked as /usr/local/bin/mpcd; beside it MuJoCo's AVX build of
# libmujoco 2.2.2 where `make deps` fetched one), /usr/local/bin/mpcctl,
# /etc/systemd/system/mpcd.service, the operations guide
# under /usr/local/share/doc/mpcd, and /etc/mpcd/mpcd.toml (the embedded default) unless a
# configuration is already there. A manifest records every file; uninstall removes those files,
# and the configuration only if it was never edited. PREFIX, SYSTEMD_DIR and DESTDIR (a staging
# root, used by the tests) move it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}
CONFIG_DIR=${CONFIG_DIR:-/etc/mpcd}
DESTDIR=${DESTDIR:-}
MANIFEST="$DESTDIR$PREFIX/share/mpcd/install-manifest"
BUILD=1
ACTION=install
for arg in "$@"; do
  case "$arg" in
    --uninstall) ACTION=uninstall ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

install_file() {  # install_file MODE SOURCE TARGET
  install -D -m "$1" "$2" "$DESTDIR$3"
  echo "$3" >> "$MANIFEST"
}

do_install() {
  if [ "$BUILD" = 1 ]; then swift build -c release; fi
  mkdir -p "$(dirname "$MANIFEST")"
  : > "$MANIFEST"
  # mpcd in a folder of its own with MuJoCo's AVX build of libmujoco where `make deps` fetched one
  # (it looks in its own folder first; scripts/mujoco_library.sh checks the copy against its pin),
  # else the system's; a link to it in bin. Root's folders only: no search path into this checkout.
  install_file 0755 .build/release/mpcd "$PREFIX/lib/mpcd/mpcd"
  scripts/mujoco_library.sh --into "$DESTDIR$PREFIX/lib/mpcd"
  if [ -f "$DESTDIR$PREFIX/lib/mpcd/libmujoco.so.2.2.2" ]; then echo "$PREFIX/lib/mpcd/libmujoco.so.2.2.2" >> "$MANIFEST"; fi
  mkdir -p "$DESTDIR$PREFIX/bin"
  ln -sfn ../lib/mpcd/mpcd "$DESTDIR$PREFIX/bin/mpcd"
  echo "$PREFIX/bin/mpcd" >> "$MANIFEST"
  install_file 0755 .build/release/mpcctl "$PREFIX/bin/mpcctl"
  install_file 0644 docs/operations.md "$PREFIX/share/doc/mpcd/operations.md"
  unit=$(mktemp)
  sed -e "s|/usr/local/bin/mpcd|$PREFIX/bin/mpcd|; s|/usr/local/share/doc|$PREFIX/share/doc|; s|/etc/mpcd/|$CONFIG_DIR/|g" \
    systemd/mpcd.service > "$unit"
  install_file 0644 "$unit" "$SYSTEMD_DIR/mpcd.service"
  rm -f "$unit"
  # secrets for the service (docs/security.md): the unit passes this folder's files to it as
  # systemd credentials; the folder stays root's alone
  install -d -m 0700 "$DESTDIR$CONFIG_DIR/credentials"
  config="$DESTDIR$CONFIG_DIR/mpcd.toml"
  if [ -e "$config" ]; then
    echo "keeping the existing $CONFIG_DIR/mpcd.toml"
  else
    mkdir -p "$(dirname "$config")"
    .build/release/mpcd --print-default > "$config"
    chmod 0644 "$config"
    # remembered with its checksum: uninstall removes it only if nobody edited it
    echo "config $CONFIG_DIR/mpcd.toml $(sha256sum "$config" | cut -d' ' -f1)" >> "$MANIFEST"
  fi
  echo "installed mpcd into ${DESTDIR:-/}"
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable --now mpcd.service
    echo "mpcd.service enabled and started; check it with: mpcctl status"
  else
    echo "systemd is not running here: start mpcd by hand with $PREFIX/bin/mpcd --config $CONFIG_DIR/mpcd.toml"
  fi
}

do_uninstall() {
  if [ ! -f "$MANIFEST" ]; then
    echo "install.sh: nothing to uninstall (no manifest at $MANIFEST)" >&2
    exit 1
  fi
  if systemd_running && systemctl list-unit-files mpcd.service >/dev/null 2>&1; then
    systemctl disable --now mpcd.service || true
  fi
  while read -r first second third; do
    if [ "$first" = config ]; then
      target="$DESTDIR$second"
      if [ -f "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$third" ]; then
        rm -f "$target"
      elif [ -f "$target" ]; then
        echo "keeping $second: it was edited after the install"
      fi
    else
      rm -f "$DESTDIR$first"
    fi
  done < "$MANIFEST"
  rm -f "$MANIFEST"
  # the folders an install made, if they are now empty
  for dir in "$PREFIX/lib/mpcd" "$PREFIX/share/mpcd" "$PREFIX/share/doc/mpcd" "$CONFIG_DIR/credentials" "$CONFIG_DIR"; do
    rmdir "$DESTDIR$dir" 2>/dev/null || true
  done
  if systemd_running; then systemctl daemon-reload; fi
  echo "uninstalled mpcd from ${DESTDIR:-/}"
}

if [ "$ACTION" = install ]; then do_install; else do_uninstall; fi
