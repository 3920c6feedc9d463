#!/bin/sh
# Makes a minimal root from a static busybox: /bin/busybox, every applet as a relative
# symlink to it, the directories a build needs and a root user.
# Usage: scripts/busybox-root.sh DIR   (DIR must not exist or be empty)
set -eu
dir=${1:?usage: busybox-root.sh DIR}
bb=${BUSYBOX:-/bin/busybox}
[ -x "$bb" ] || { echo "busybox-root.sh: no static busybox at $bb (apt-get install busybox-static)" >&2; exit 1; }
if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    echo "busybox-root.sh: $dir exists and is not empty; refusing to touch it" >&2
    exit 1
fi
mkdir -p "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin proc sys dev tmp etc root var/tmp var/cache home
chmod 1777 tmp var/tmp
cp "$bb" bin/busybox
"$bb" --list-full | while read -r applet; do
    case "$applet" in bin/busybox) continue ;; esac
    [ -e "$applet" ] && continue
    up=$(echo "$applet" | sed 's|[^/]*/|../|g; s|[^/]*$||')
    ln -s "${up}bin/busybox" "$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd
echo 'root:x:0:' > etc/group
echo 'tty:x:5:' >> etc/group
: > etc/resolv.conf
echo "made a busybox root in $dir" >&2
