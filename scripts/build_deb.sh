#!/usr/bin/env bash
# Builds the Debian package: dist/mpcd_<version>_<arch>.deb (docs/operations.md).
#
#   scripts/build_deb.sh                  build (portable CPU target, Swift runtime linked in) and package
#   scripts/build_deb.sh --native         build for this machine's CPU (faster kernels, not for other CPUs)
#   scripts/build_deb.sh --version V      package version V instead of the source's (tests build upgrades)
#   scripts/build_deb.sh --out DIR        write the .deb into DIR (default dist)
#
# The binaries link the Swift runtime and Foundation statically (--static-swift-stdlib), so the box
# needs no Swift toolchain; the C libraries (libzmq, OpenBLAS, MuJoCo: Debian's, not the AVX build
# of scripts/mujoco_library.sh, as the binaries have no search path of their own) come from
# Debian, as the package's Depends (from dpkg-shlibdeps) say. The build has its own folder,
# .build/deb.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="$(sed -n 's/^public let mpcdVersion = "\(.*\)"$/\1/p' Sources/ControlProtocol/Version.swift)-1"
OUT=dist
PORTABLE=1
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --native) PORTABLE=0 ;;
    --version) i=$((i + 1)); VERSION="${!i:?--version needs a value}" ;;
    --out) i=$((i + 1)); OUT="${!i:?--out needs a folder}" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build_deb.sh: unknown option ${!i} (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$VERSION" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
  echo "build_deb.sh: \"$VERSION\" is not a Debian version" >&2
  exit 2
fi

SCRATCH=.build/deb
[ "$PORTABLE" = 1 ] || SCRATCH=.build/deb-native
echo "building mpcd and mpcctl (static Swift runtime, $([ "$PORTABLE" = 1 ] && echo portable || echo native) CPU target) in $SCRATCH"
MPCD_PORTABLE=$PORTABLE swift build -c release --static-swift-stdlib --disable-local-rpath --scratch-path "$SCRATCH" --product mpcd
MPCD_PORTABLE=$PORTABLE swift build -c release --static-swift-stdlib --disable-local-rpath --scratch-path "$SCRATCH" --product mpcctl
BIN="$SCRATCH/release"

ARCH="$(dpkg --print-architecture)"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
chmod 0755 "$STAGE"

install -D -m 0755 "$BIN/mpcd" "$STAGE/usr/bin/mpcd"
install -D -m 0755 "$BIN/mpcctl" "$STAGE/usr/bin/mpcctl"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$STAGE/usr/bin/mpcd" "$STAGE/usr/bin/mpcctl"
install -d -m 0755 "$STAGE/lib/systemd/system"
sed -e 's|/usr/local/bin/mpcd|/usr/bin/mpcd|; s|file:///usr/local/share/doc/mpcd/operations.md|file:///usr/share/doc/mpcd/operations.md.gz|' \
  systemd/mpcd.service > "$STAGE/lib/systemd/system/mpcd.service"
chmod 0644 "$STAGE/lib/systemd/system/mpcd.service"
install -d -m 0755 "$STAGE/etc/mpcd"
"$BIN/mpcd" --print-default > "$STAGE/etc/mpcd/mpcd.toml"
chmod 0644 "$STAGE/etc/mpcd/mpcd.toml"
install -d -m 0700 "$STAGE/etc/mpcd/credentials"
# examples: a configuration and a network for every built-in task, the dashboard and scrape job
install -d -m 0755 "$STAGE/usr/share/mpcd"
# the files the checkout tracks, so that nothing left there by hand ships (a trace written with
# --out, a training checkpoint); outside a git checkout (a source tarball), every file. The
# checkout's own git (.git here, not one a tarball was unpacked inside), trusted whoever owns the
# folder. Regular files only: deploy/config/mujoco/gymnasium is a link into this checkout's Python
# environment (scripts/gymnasium_models.sh), not something to ship
EXAMPLES=(deploy/config deploy/networks deploy/grafana deploy/prometheus)
if [ -e .git ]; then
  list_examples() { git -c safe.directory="$PWD" ls-files -z -- "${EXAMPLES[@]}"; }
else
  list_examples() { find "${EXAMPLES[@]}" -type f -print0; }
fi
EXAMPLE_FILES=()
while IFS= read -r -d '' f; do EXAMPLE_FILES+=("$f"); done < <(list_examples)
# a listing without the policy every pendulum configuration names failed, whatever it printed
if ! printf '%s\n' "${EXAMPLE_FILES[@]}" | grep -qx deploy/networks/pendulum_policy.safetensors; then
  echo "build_deb.sh: could not list the example files (no deploy/networks/pendulum_policy.safetensors among ${#EXAMPLE_FILES[@]})" >&2
  exit 1
fi
for f in "${EXAMPLE_FILES[@]}"; do
  if [ -f "$f" ] && [ ! -L "$f" ]; then install -D -m 0644 "$f" "$STAGE/usr/share/mpcd/${f#deploy/}"; fi
done
find "$STAGE/usr/share/mpcd" -type d -exec chmod 0755 {} + && find "$STAGE/usr/share/mpcd" -type f -exec chmod 0644 {} +
DOC="$STAGE/usr/share/doc/mpcd"
install -d -m 0755 "$DOC"
for f in operations security configuration protocol reliability recording; do gzip -9nc "docs/$f.md" > "$DOC/$f.md.gz"; done
install -m 0644 deploy/debian/copyright "$DOC/copyright"
printf 'mpcd (%s) unstable; urgency=medium\n\n  * Built from the mpcd repository.\n\n -- mpcd developers <mpcd@localhost>  %s\n' \
  "$VERSION" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" | gzip -9n > "$DOC/changelog.Debian.gz"
install -D -m 0644 deploy/debian/lintian-overrides "$STAGE/usr/share/lintian/overrides/mpcd"
# manual pages: each command's --help, as it is
install -d -m 0755 "$STAGE/usr/share/man/man1"
for command in mpcd mpcctl; do
  {
    printf '.TH %s 1 "" "%s" "User Commands"\n.SH NAME\n%s \\- %s\n.SH DESCRIPTION\n.nf\n' \
      "${command^^}" "$VERSION" "$command" "$([ $command = mpcd ] && echo "model-predictive control daemon" || echo "control and inspect a running mpcd")"
    # the command's help, and its default subcommand's (mpcd serve: --config, --check and the rest)
    { "$BIN/$command" --help; if [ $command = mpcd ]; then printf '\n'; "$BIN/$command" serve --help; fi; } | sed -e 's/\\/\\e/g' -e 's/^\./\\\&./'
    printf '.fi\n.SH SEE ALSO\n/usr/share/doc/mpcd/operations.md.gz, /usr/share/doc/mpcd/configuration.md.gz\n'
  } | gzip -9n > "$STAGE/usr/share/man/man1/$command.1.gz"
done

# Depends: the packages whose libraries the binaries load, as dpkg-shlibdeps finds them
WORK="$(mktemp -d)"
mkdir -p "$WORK/debian"
printf 'Source: mpcd\n\nPackage: mpcd\nArchitecture: any\n' > "$WORK/debian/control"
DEPENDS="$(cd "$WORK" && dpkg-shlibdeps -O "$STAGE/usr/bin/mpcd" "$STAGE/usr/bin/mpcctl" | sed -n 's/^shlibs:Depends=//p')"
rm -rf "$WORK"
[ -n "$DEPENDS" ] || { echo "build_deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

install -d -m 0755 "$STAGE/DEBIAN"
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: mpcd
Version: $VERSION
Architecture: $ARCH
Maintainer: mpcd developers <mpcd@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: $DEPENDS, init-system-helpers (>= 1.52)
Section: misc
Priority: optional
Description: model-predictive control daemon for robots
 mpcd answers state observations from robots and simulators over ZeroMQ with
 actions at a fixed rate, planned by mirror descent (MPPI, CEM) with an
 amortised network as the action prior. Runs as the systemd service
 mpcd.service; mpcctl inspects and reconfigures it.
CONTROL
echo /etc/mpcd/mpcd.toml > "$STAGE/DEBIAN/conffiles"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$STAGE/DEBIAN/"

mkdir -p "$OUT"
DEB="$OUT/mpcd_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz -z2 --build "$STAGE" "$DEB" >/dev/null
echo "wrote $DEB ($(du -h "$DEB" | cut -f1))"
