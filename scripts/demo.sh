#!/bin/bash
# `make demo`: a busybox root, the demo build, and proof that the host saw nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bldr=${BLDR:-target/$(rustc -vV | sed -n 's/^host: //p')/release/bldr}
root=.demo/root
export BLDR_STATE_DIR=${BLDR_STATE_DIR:-$PWD/.demo/state}
if [ ! -x "$root/bin/busybox" ]; then
    if [ -e "$root" ]; then
        echo "demo: $root exists but has no busybox; remove it (it is not mounted) and retry" >&2
        exit 1
    fi
    $bldr root create busybox "$root"
fi
echo "== bldr plan demo"
$bldr plan demo
echo
before=$(mktemp); after=$(mktemp); during=$(mktemp)
trap 'rm -f "$before" "$after" "$during"' EXIT
cut -d' ' -f3- /proc/self/mountinfo | sort > "$before"
echo "== bldr run demo"
set +e
$bldr run demo --progress plain
code=$?
set -e
cut -d' ' -f3- /proc/self/mountinfo | sort > "$after"
echo
echo "== the run record"
run_dir="$BLDR_STATE_DIR/runs/demo/latest"
ls -l "$run_dir/" "$run_dir/artifacts/" 2>/dev/null || ls -l "$run_dir/"
echo
echo "== the host's mount table before and after"
if diff -u "$before" "$after"; then
    echo "identical: $(wc -l < "$before") mounts before, $(wc -l < "$after") after; the build's mounts never reached the host"
else
    echo "the host's mount table changed (see above)"; exit 1
fi
exit $code
