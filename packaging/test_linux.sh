#!/usr/bin/env bash
# Install the built .deb the way a user does, check the installed app, remove it, and check
# nothing is left behind:
#   1. apt-get install ./dist/mergestudio_*.deb (pulls the Depends: from the archive)
#   2. the .desktop entry validates; the bundle's key libraries resolve (ldd)
#   3. `mergestudio --smoke` offscreen, then under Xvfb with Qt's xcb platform
#   4. `mergestudio studio` under Xvfb: time until its window is mapped, and a screenshot
#   5. apt-get purge, then compare the installed-to folders with before
# Needs root or sudo. Writes dist/package-report.txt and dist/mergestudio-screenshot.png.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
DEB=${1:-$(ls -t dist/mergestudio_*.deb 2>/dev/null | head -1)}
REPORT=dist/package-report.txt
SHOT=dist/mergestudio-screenshot.png
START_LIMIT_S=${START_LIMIT_S:-10}  # fail above this; the target on a quiet machine is 3 s
TOOLS="xvfb xauth x11-utils imagemagick desktop-file-utils"
WATCHED="/opt /usr/bin /usr/share/applications /usr/share/icons/hicolor /usr/share/doc/mergestudio"

[ -f "$DEB" ] || { echo "no .deb in dist/: run make package first" >&2; exit 1; }
say() { echo "test_linux: $*" | tee -a "$REPORT"; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }

install_tools() {
    local missing=""
    for p in $TOOLS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
}

snapshot() {  # every path under the folders a package writes to, minus caches triggers rewrite
    { find $WATCHED -xdev 2>/dev/null || true; } | { grep -v -e 'icon-theme.cache$' -e 'mimeinfo.cache$' || true; } | sort
}

install_deb() {
    local start end
    start=$(now)
    # Depends: come from the archive; refresh the package lists only when they are stale.
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "./$DEB" >/dev/null; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "./$DEB" >/dev/null
    fi
    end=$(now)
    say "installed $(basename "$DEB") ($(du -h "$DEB" | cut -f1)) in $(secs "$start" "$end") s;" \
        "Installed-Size $(dpkg-query -W -f='${Installed-Size}' mergestudio) KiB, /opt/mergestudio $(du -sh /opt/mergestudio | cut -f1)"
    [ "$(command -v mergestudio)" = /usr/bin/mergestudio ] || { say "FAIL: mergestudio is not on the PATH"; exit 1; }
}

check_files() {
    desktop-file-validate /usr/share/applications/mergestudio.desktop
    for size in 16 32 48 64 128 256 512; do
        [ -f "/usr/share/icons/hicolor/${size}x${size}/apps/mergestudio.png" ] || { say "FAIL: no ${size}px icon"; exit 1; }
    done
    local qt=/opt/mergestudio/_internal/PySide6/Qt missing
    missing=$(ldd /opt/mergestudio/mergestudio "$qt"/plugins/platforms/libqxcb.so "$qt"/plugins/platforms/libqoffscreen.so \
        "$qt"/lib/libQt6Core.so.6 "$qt"/lib/libQt6Gui.so.6 "$qt"/lib/libQt6Widgets.so.6 "$qt"/lib/libQt6XcbQpa.so.6 \
        /opt/mergestudio/_internal/torch/lib/libtorch_cpu.so 2>&1 | grep 'not found' | sort -u || true)
    [ -z "$missing" ] || { say "FAIL: libraries not found (add their packages to packaging/linux/depends.txt): $missing"; exit 1; }
    say ".desktop valid, hicolor icons present, bundle libraries resolve"
}

smoke() {  # smoke <label> <command...>
    local label=$1 start end line
    shift
    start=$(now)
    line=$(env HOME="$SCRATCH/home" "$@" mergestudio --smoke)
    end=$(now)
    say "smoke $label ($(secs "$start" "$end") s wall): $line"
}

start_xvfb() {
    for n in $(seq 90 120); do
        [ -e "/tmp/.X$n-lock" ] && continue
        Xvfb ":$n" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
        XVFB_PID=$!
        DISPLAY_NAME=":$n"
        for _ in $(seq 50); do xwininfo -display "$DISPLAY_NAME" -root >/dev/null 2>&1 && return 0; sleep 0.1; done
        kill "$XVFB_PID"; break
    done
    say "FAIL: cannot start Xvfb"; exit 1
}

window_viewable() {  # window_viewable MIN_WIDTH: a window titled "…Merge Studio…" that wide is viewable
    local id
    for id in $(xwininfo -display "$DISPLAY_NAME" -root -children 2>/dev/null | grep 'Merge Studio' |
                awk -v w="$1" '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+x[0-9]+[+-]/) { split($i, g, "x"); if (g[1] >= w) print $1 } }'); do
        xwininfo -display "$DISPLAY_NAME" -id "$id" 2>/dev/null | grep -q 'Map State: IsViewable' && return 0
    done
    return 1
}

wait_for_window() {  # wait_for_window MIN_WIDTH: seconds since $LAUNCH until it is viewable
    until window_viewable "$1"; do
        # (stderr: stdout is the caller's command substitution)
        kill -0 "$APP_PID" 2>/dev/null || { cat "$SCRATCH/studio.log" >&2; say "FAIL: the studio exited before showing its window" >&2; exit 1; }
        [ $(( ($(now) - LAUNCH) / 1000000000 )) -lt 60 ] || { say "FAIL: no window after 60 s" >&2; exit 1; }
        sleep 0.05
    done
    secs "$LAUNCH" "$(now)"
}

window_and_screenshot() {
    local first main
    LAUNCH=$(now)
    env HOME="$SCRATCH/home" DISPLAY="$DISPLAY_NAME" QT_QPA_PLATFORM=xcb mergestudio studio --demo >"$SCRATCH/studio.log" 2>&1 &
    APP_PID=$!
    first=$(wait_for_window 1)     # the splash (or the window, whichever shows first)
    main=$(wait_for_window 600)    # the main window
    say "start: first window visible after $first s, main window after $main s (limit ${START_LIMIT_S} s)"
    sleep 4  # let the demo project open and the pages paint before the screenshot
    import -display "$DISPLAY_NAME" -window root "$SHOT"
    say "screenshot: $SHOT"
    kill "$APP_PID"; wait "$APP_PID" 2>/dev/null || true
    awk -v s="$main" -v l="$START_LIMIT_S" 'BEGIN { exit !(s <= l) }' || { say "FAIL: start took $main s"; exit 1; }
}

remove_and_compare() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get purge -y -qq mergestudio >/dev/null
    snapshot > "$SCRATCH/after.txt"
    if ! diff "$SCRATCH/before.txt" "$SCRATCH/after.txt" > "$SCRATCH/left.txt"; then
        say "FAIL: the package left files behind or removed others:"; cat "$SCRATCH/left.txt"; exit 1
    fi
    if dpkg -s mergestudio >/dev/null 2>&1 || [ -e /opt/mergestudio ] || command -v mergestudio >/dev/null; then
        say "FAIL: mergestudio still installed"; exit 1
    fi
    say "purged: nothing left behind in $WATCHED"
}

cleanup() {
    [ -z "${XVFB_PID:-}" ] || kill "$XVFB_PID" 2>/dev/null || true
    # After a failure, do not leave the package installed on the machine.
    if dpkg -s mergestudio >/dev/null 2>&1; then $SUDO apt-get purge -y -qq mergestudio >/dev/null || true; fi
    rm -rf "$SCRATCH"
}

main() {
    : > "$REPORT"
    SCRATCH=$(mktemp -d)
    mkdir -p "$SCRATCH/home"
    trap cleanup EXIT
    install_tools
    if dpkg -s mergestudio >/dev/null 2>&1; then $SUDO apt-get purge -y -qq mergestudio >/dev/null; fi
    snapshot > "$SCRATCH/before.txt"
    install_deb
    check_files
    smoke offscreen env QT_QPA_PLATFORM=offscreen
    smoke xvfb xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb
    start_xvfb
    window_and_screenshot
    remove_and_compare
    say "OK"
}

main "$@"
