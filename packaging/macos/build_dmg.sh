#!/usr/bin/env bash
# macOS (Apple silicon, arm64) disk image: freeze "Merge Studio.app" with PyInstaller, sign
# it, wrap it in a .dmg, notarise and staple, smoke-test the app inside.
# Runs on macOS 13+ arm64 with Python 3.11 (arm64), the project's venv and PyInstaller;
# not on the project's Linux machines (packaging/README.md). From the repository root:
#
#   packaging/macos/build_dmg.sh
#
# Signing and notarisation are optional and happen when these are set:
#   MACOS_CODESIGN_IDENTITY  "Developer ID Application: Name (TEAMID)" (in the keychain)
#   MACOS_NOTARY_PROFILE     a profile stored once with
#                            xcrun notarytool store-credentials NAME --apple-id ... --team-id ...
# Without them the .dmg is unsigned (Gatekeeper asks the user to allow it in Settings).
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(uname -s)" = Darwin ] || { echo "build_dmg.sh runs on macOS only" >&2; exit 1; }
[ "$(uname -m)" = arm64 ] || echo "warning: building on $(uname -m); the release target is arm64" >&2
PY=${PY:-.venv/bin/python}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
APP="dist/Merge Studio.app"
DMG="dist/MergeStudio-$VERSION-macos-arm64.dmg"
IDENTITY=${MACOS_CODESIGN_IDENTITY:-}

make_icns() {  # resources/icons PNGs -> build/mergestudio.icns (iconutil ships with macOS)
    local set=build/mergestudio.iconset
    rm -rf "$set" && mkdir -p "$set"
    for size in 16 32 128 256 512; do
        cp "resources/icons/mergestudio-$size.png" "$set/icon_${size}x${size}.png"
        double=$((size * 2))
        [ -f "resources/icons/mergestudio-$double.png" ] && cp "resources/icons/mergestudio-$double.png" "$set/icon_${size}x${size}@2x.png"
    done
    iconutil -c icns "$set" -o build/mergestudio.icns
}

freeze() {
    # The spec builds the .app bundle on macOS, signs every binary inside-out with the
    # hardened runtime when an identity is given, and uses the .icns made above.
    MERGESTUDIO_TARGET_ARCH=arm64 MERGESTUDIO_ICNS=build/mergestudio.icns \
    MERGESTUDIO_CODESIGN_IDENTITY="$IDENTITY" \
    MERGESTUDIO_ENTITLEMENTS=packaging/macos/entitlements.plist \
        "$PY" -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/mergestudio.spec
    if [ -n "$IDENTITY" ]; then
        # Seal the whole bundle last (PyInstaller signed the binaries inside).
        codesign --force --timestamp --options runtime --entitlements packaging/macos/entitlements.plist \
            --sign "$IDENTITY" "$APP"
        codesign --verify --deep --strict --verbose=2 "$APP"
    fi
}

make_dmg() {
    local staging=build/dmg
    rm -rf "$staging" "$DMG" && mkdir -p "$staging"
    cp -R "$APP" "$staging/"
    ln -s /Applications "$staging/Applications"  # drag-to-install
    hdiutil create -volname "Merge Studio $VERSION" -srcfolder "$staging" -fs APFS -format ULFO -ov "$DMG"
    [ -z "$IDENTITY" ] || codesign --force --timestamp --sign "$IDENTITY" "$DMG"
}

notarise() {
    [ -n "${MACOS_NOTARY_PROFILE:-}" ] && [ -n "$IDENTITY" ] || { echo "not notarised (no MACOS_NOTARY_PROFILE / identity)"; return; }
    xcrun notarytool submit "$DMG" --keychain-profile "$MACOS_NOTARY_PROFILE" --wait
    xcrun stapler staple "$DMG"
    spctl --assess --type open --context context:primary-signature --verbose "$DMG"
}

smoke() {  # the app inside the image, as a user would start it after dragging it out
    local mount
    mount=$(mktemp -d)
    hdiutil attach -nobrowse -readonly -mountpoint "$mount" "$DMG" >/dev/null
    QT_QPA_PLATFORM=offscreen "$mount/Merge Studio.app/Contents/MacOS/mergestudio" --smoke || { hdiutil detach "$mount"; exit 1; }
    hdiutil detach "$mount" >/dev/null
}

start=$SECONDS
make_icns
freeze
echo "freeze: $((SECONDS - start)) s, app $(du -sh "$APP" | cut -f1)"
make_dmg
notarise
smoke
echo "dmg: $DMG ($(du -h "$DMG" | cut -f1)), total $((SECONDS - start)) s"
