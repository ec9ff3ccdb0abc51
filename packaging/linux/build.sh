#!/usr/bin/env bash
# Package the frozen bundle (dist/mergestudio, from packaging/mergestudio.spec) for Linux:
#   dist/mergestudio_<version>_<arch>.deb          app in /opt/mergestudio, `mergestudio` on
#                                                  the PATH, .desktop entry, hicolor icons
#   dist/mergestudio-<version>-linux-<machine>.tar.gz   the same bundle to unpack anywhere
#
# Environment: FORMATS ("deb tar", default both), DEB_COMPRESSION (zstd by default: seconds;
# xz for releases: minutes, ~25 % smaller), GZIP_LEVEL (6).
set -euo pipefail
cd "$(dirname "$0")/../.."

FORMATS=${FORMATS:-deb tar}
DEB_COMPRESSION=${DEB_COMPRESSION:-zstd}
GZIP_LEVEL=${GZIP_LEVEL:-6}
BUNDLE=dist/mergestudio
HERE=packaging/linux
ICONS=resources/icons
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
MACHINE=$(uname -m)

[ -x "$BUNDLE/mergestudio" ] || { echo "no frozen bundle at $BUNDLE: run pyinstaller first (make package)" >&2; exit 1; }

# The spec links <bundle>/resources -> _internal/resources (code that finds its data from
# __file__ looks there); an older bundle without it gets it here.
[ -e "$BUNDLE/resources" ] || ln -s _internal/resources "$BUNDLE/resources"

seconds() { date +%s%N; }
elapsed() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

stage_deb_tree() {
    local root=$1
    rm -rf "$root"
    mkdir -p "$root/opt" "$root/usr/bin" "$root/usr/share/applications" "$root/usr/share/doc/mergestudio" "$root/DEBIAN"
    cp -a "$BUNDLE" "$root/opt/mergestudio"
    # A relative link: the PyInstaller bootloader resolves it to find _internal/.
    ln -s ../../opt/mergestudio/mergestudio "$root/usr/bin/mergestudio"
    install -m 644 "$HERE/mergestudio.desktop" "$root/usr/share/applications/mergestudio.desktop"
    for png in "$ICONS"/mergestudio-*.png; do
        size=$(basename "$png" .png); size=${size#mergestudio-}
        install -D -m 644 "$png" "$root/usr/share/icons/hicolor/${size}x${size}/apps/mergestudio.png"
    done
    install -D -m 644 "$ICONS/mergestudio.svg" "$root/usr/share/icons/hicolor/scalable/apps/mergestudio.svg"
    write_copyright "$root/usr/share/doc/mergestudio/copyright"
    # Files owned by root, directories 755, nothing group/world-writable (lintian's rules).
    chmod -R u+rwX,go+rX,go-w "$root"
    write_control "$root"
}

write_copyright() {
    cat > "$1" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mergestudio

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.

Files: opt/mergestudio/_internal/*
License: various
 The bundled libraries (Python, Qt/PySide6 under LGPL-3.0, PyTorch, NumPy, transformers,
 ...) keep their own licences; their texts and an index are in
 /opt/mergestudio/_internal/licenses/. Qt's libraries are separate shared objects in
 /opt/mergestudio/_internal/PySide6/Qt/lib and may be replaced.
EOF
}

depends_line() {
    grep -v '^\s*#' "$HERE/depends.txt" | sed '/^\s*$/d' | paste -sd, - | sed 's/,/, /g'
}

write_control() {
    local root=$1 size
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@INSTALLED_SIZE@/$size/" \
        -e "s/@DEPENDS@/$(depends_line)/" "$HERE/control.in" > "$root/DEBIAN/control"
}

build_deb() {
    local root=build/deb/mergestudio_${VERSION}_${ARCH} out=dist/mergestudio_${VERSION}_${ARCH}.deb start
    start=$(seconds)
    stage_deb_tree "$root"
    dpkg-deb --root-owner-group -Z"$DEB_COMPRESSION" --build "$root" "$out" >/dev/null
    rm -rf "$root"
    echo "deb: $out ($(du -h "$out" | cut -f1), $DEB_COMPRESSION, $(elapsed "$start") s)"
}

build_tar() {
    local name=mergestudio-${VERSION}-linux-${MACHINE} out start staging=build/tar
    out=dist/$name.tar.gz
    start=$(seconds)
    rm -rf "$staging" && mkdir -p "$staging/$name"
    cp -a "$BUNDLE"/. "$staging/$name/"
    install -m 644 "$HERE/mergestudio.desktop" "$ICONS/mergestudio.svg" "$staging/$name/"
    cat > "$staging/$name/INSTALL.txt" <<EOF
Merge Studio $VERSION for Linux ($MACHINE), self-contained.

Run:      ./mergestudio studio        (the window)   ./mergestudio --help   (the CLI)
Check:    ./mergestudio --smoke
Needs:    the X11/OpenGL libraries listed in the .deb's Depends (on Debian/Ubuntu:
          apt install $(depends_line | sed 's/ ([^)]*)//g; s/,//g'))
Licences: _internal/licenses/
EOF
    tar -C "$staging" -cf - "$name" | gzip -"$GZIP_LEVEL" > "$out"
    rm -rf "$staging"
    echo "tar: $out ($(du -h "$out" | cut -f1), $(elapsed "$start") s)"
}

for format in $FORMATS; do
    case $format in
        deb) build_deb ;;
        tar) build_tar ;;
        *) echo "unknown format: $format (deb, tar)" >&2; exit 2 ;;
    esac
done
