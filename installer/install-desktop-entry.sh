#!/bin/sh
# Add musa-console to the current user's desktop menu (no root needed):
# a launcher in ~/.local/bin, the .desktop entry and the icons under ~/.local/share.
# Run it from the unpacked bundle; run it again after moving the bundle.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
bin=$HOME/.local/bin

mkdir -p "$bin" "$data/applications"
ln -sf "$here/musa-console" "$bin/musa-console"
cp -R "$here/share/icons" "$data/"
sed "s|^Exec=musa-console|Exec=$here/musa-console|; s|^TryExec=musa-console|TryExec=$here/musa-console|" \
    "$here/share/applications/musa-console.desktop" > "$data/applications/musa-console.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "musa-console added to the menu; launcher: $bin/musa-console"
