#!/bin/bash
# `make bench`: bldr side by side with the tools it replaces, on the same work, in one
# run (hyperfine), then docs/benchmarks.md with the tables, the exact commands and the
# machine. Never a timed test: numbers are reported, not asserted.
#
# Every peer runs inside `unshare --mount --propagation private` (bldr too, for equal
# footing), so that even the hand-written chroot script mounts nothing on the host.
#
# Environment: BENCH_DIR (scratch, default /var/tmp/bldr-bench), BENCH_RUNS (default 30),
# BENCH_STARTUP_RUNS (default 150; the millisecond-long start-up and ephemeral runs),
# BENCH_INTERLEAVE_ROUNDS (default 300; the interleaved rounds that judge the ratios),
# BENCH_SETTLE (seconds to wait before a timed section, default 31; see settle()),
# BENCH_DEBIAN_ROOT (a debootstrap root over 500 MB; made with `bldr root create` when
# missing), BENCH_QUICK=1 (smaller artifact and memory sets, for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
bldr=${BLDR:-$top/target/release/bldr}
dir=${BENCH_DIR:-/var/tmp/bldr-bench}
runs=${BENCH_RUNS:-30}
# Start-up runs are a few milliseconds each and this machine's noise is of that order:
# many more of them.
startup_runs=${BENCH_STARTUP_RUNS:-150}
interleave_rounds=${BENCH_INTERLEAVE_ROUNDS:-300}
debian=${BENCH_DEBIAN_ROOT:-/var/cache/bldr-test/roots/debian-bookworm}
quick=${BENCH_QUICK:-0}
results=$dir/results
rm -rf --one-file-system "$results"
mkdir -p "$dir" "$results"
export BLDR_STATE_DIR=$dir/state
wrap="unshare --mount --propagation private --"

[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (the peers need it too)" >&2; exit 1; }
say() { printf '\n== %s\n' "$*" >&2; }
: > "$results/commands.tsv"
# group SECTION "HYPERFINE OPTIONS" NAME COMMAND [NAME COMMAND ...]
group() {
    local section=$1 opts=$2; shift 2
    local args=()
    while [ $# -gt 0 ]; do
        printf '%s\t%s\t%s\n' "$section" "$1" "$2" >> "$results/commands.tsv"
        args+=(-n "$1" "$2"); shift 2
    done
    local prep=()
    [ -n "${PREPARE:-}" ] && prep=(--prepare "$PREPARE")
    # shellcheck disable=SC2086
    hyperfine -N $opts "${prep[@]}" --export-json "$results/$section.json" "${args[@]}"
}

# --- fixtures --------------------------------------------------------------------------
root=$dir/busybox-root
[ -x "$root/bin/busybox" ] || $bldr root create busybox "$root"
mkdir -p "$dir/share" "$root/mnt/share"
if [ ! -x "$debian/usr/bin/apt-get" ]; then
    say "making the Debian root for the ephemeral benchmark ($debian)"
    mkdir -p "$(dirname "$debian")"
    $bldr root create debian "$debian.tmp" --suite bookworm && mv "$debian.tmp" "$debian"
fi

# The hand-written chroot script every Gentoo wiki page has a version of.
cat > "$dir/chroot-script.sh" <<SH
#!/bin/sh
set -e
r=$root
mount -t proc proc \$r/proc
mount --rbind /sys \$r/sys
mount --rbind /dev \$r/dev
mount -t tmpfs tmpfs \$r/tmp
mount --bind $dir/share \$r/mnt/share
chroot \$r /bin/true
umount \$r/mnt/share
umount \$r/tmp
umount -R \$r/dev
umount -R \$r/sys
umount \$r/proc
SH
chmod +x "$dir/chroot-script.sh"

profile() { # name, yaml
    printf '%s\n' "$2" > "$dir/$1.yaml"
}
profile startup "chroot: $root
tmpfs: [/tmp]
shared: [{source: $dir/share, target: /mnt/share}]
commands: ['true']"

# Waits for the disk to settle before a timed section: syncs what was written, then
# waits half a minute. On this VM's root filesystem (ext4 without a journal, mounted
# discard), right after a burst of writing and deleting (150 bldr runs; the artifact and
# memory sections, which delete 110,000 files), making a folder took 250-270 us instead
# of 30-40 us, back to normal after a sync or about 30 s (ext4 without a journal also
# avoids reusing inodes deleted in the last 30 s). bldr makes a few files and folders
# per run, its peers almost none.
settle() {
    sync
    sleep "${BENCH_SETTLE:-31}"
}

# How fast this disk makes and removes a folder right now: bldr writes its records there
# (and an ephemeral run's layer), its peers mostly do not, so a disk still busy with
# earlier work weighs on bldr alone. The report prints it beside the machine.
disk_latency() {
    python3 - "$dir" <<'PY'
import os, statistics, sys, time
d = os.path.join(sys.argv[1], "disk-probe")
os.makedirs(d, exist_ok=True)
t = []
for i in range(50):
    p = os.path.join(d, str(i))
    a = time.perf_counter(); os.mkdir(p); os.rmdir(p); t.append(time.perf_counter() - a)
os.rmdir(d)
print(f"{statistics.median(t) * 1e6:.0f}")
PY
}

# --- 1. start-up ---------------------------------------------------------------------
settle
disk_latency > "$results/disk-before.txt"
say "1. start-up: one command (true) with /proc, /dev, a tmpfs and a shared tree"
group startup "--warmup 10 --runs $startup_runs" \
    bldr "$wrap $bldr run $dir/startup.yaml --progress none" \
    bwrap "$wrap bwrap --bind $root / --proc /proc --dev /dev --tmpfs /tmp --bind $dir/share /mnt/share --unshare-pid --unshare-uts --unshare-ipc --die-with-parent /bin/true" \
    "bwrap, sh -c true" "$wrap bwrap --bind $root / --proc /proc --dev /dev --tmpfs /tmp --bind $dir/share /mnt/share --unshare-pid --unshare-uts --unshare-ipc --die-with-parent /bin/sh -c true" \
    systemd-nspawn "$wrap systemd-nspawn --register=no --keep-unit -q -D $root --tmpfs=/tmp --bind=$dir/share:/mnt/share /bin/true" \
    chroot-script "$wrap $dir/chroot-script.sh" \
    unshare+chroot "unshare --mount --pid --fork --uts --ipc chroot $root /bin/true"

# --- 2. ephemeral --------------------------------------------------------------------
say "2. ephemeral runs on a $(du -sh --apparent-size "$debian" | cut -f1) Debian root"
profile deb "chroot: $debian
commands: ['true']"
group ephemeral "--warmup 10 --runs $startup_runs" \
    "bldr --ephemeral" "$wrap $bldr run $dir/deb.yaml --ephemeral --progress none" \
    "bldr" "$wrap $bldr run $dir/deb.yaml --progress none"

# --- 1 and 2 again, interleaved: the two ratio targets ---------------------------------
# hyperfine runs each command's runs in one block, so this machine's drift from one
# minute to the next lands on one side of a ratio. The targets are judged on these
# rounds instead: every round runs each command once, in a fresh random order.
say "1 and 2 again, interleaved ($interleave_rounds rounds): the ratio targets"
settle
# One pass per target, with the two commands it compares only: what one command leaves
# the kernel to do after it exits (the disk writing a record) lands on the next one.
# interleaved SECTION NAME COMMAND [NAME COMMAND ...]
interleaved() {
    local section=$1; shift
    local args=()
    while [ $# -gt 0 ]; do
        printf 'interleaved %s\t%s\t%s\n' "$section" "$1" "$2" >> "$results/commands.tsv"
        args+=(-n "$1" "$2"); shift 2
    done
    python3 scripts/interleave.py --json "$results/interleaved-$section.json" "$interleave_rounds" "${args[@]}"
}
interleaved startup \
    "bldr" "$wrap $bldr run $dir/startup.yaml --progress none" \
    "bwrap" "$wrap bwrap --bind $root / --proc /proc --dev /dev --tmpfs /tmp --bind $dir/share /mnt/share --unshare-pid --unshare-uts --unshare-ipc --die-with-parent /bin/true"
settle
interleaved ephemeral \
    "bldr --ephemeral" "$wrap $bldr run $dir/deb.yaml --ephemeral --progress none" \
    "bldr" "$wrap $bldr run $dir/deb.yaml --progress none"

# After the interleaved rounds: each of these copies the Debian root and deletes the copy,
# and the disk is still busy with that for a while after (bldr writes its records there).
group nspawn-x "--warmup 1 --runs 3" \
    "systemd-nspawn -x" "$wrap systemd-nspawn --register=no --keep-unit -q -x -D $debian /bin/true"
sync

disk_latency > "$results/disk-after-ratios.txt"

# --- 3. artifacts --------------------------------------------------------------------
if [ "$quick" = 1 ]; then nfiles=1000; fsize=100000; else nfiles=10000; fsize=110000; fi
say "3. artifacts: $nfiles files of $fsize bytes, collected with a sha256 manifest"
src=$dir/files
if [ "$(find "$src" -type f 2>/dev/null | wc -l)" -ne "$nfiles" ]; then
    rm -rf --one-file-system "$src"; mkdir -p "$src"
    python3 - "$src" "$nfiles" "$fsize" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    sub = os.path.join(d, f"d{i % 100:02d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(size))
PY
fi
mkdir -p "$root/data"
profile collect "chroot: $root
shared: [{source: $src, target: /data, readonly: true}]
commands: ['true']
artifacts: [{from: /data, copy: true}]"
out=$dir/out
PREPARE="rm -rf --one-file-system $out" group artifacts "--warmup 1 --runs 5" \
    "bldr (copy + SHA256SUMS)" "$wrap $bldr run $dir/collect.yaml --progress none --out $out" \
    "cp -a + sha256sum" "sh -c 'mkdir -p $out && cp -a $src $out/files && cd $out/files && find . -type f -print0 | xargs -0 sha256sum > $out/SHA256SUMS'"

# --- 4. memory -------------------------------------------------------------------------
if [ "$quick" = 1 ]; then big=10000; else big=100000; fi
say "4. peak RSS collecting 1,000 vs $big small files"
for n in 1000 $big; do
    profile "mem$n" "chroot: $root
tmpfs: [{target: /out, size: 2G}]
commands: ['i=0; mkdir -p /out/a; cd /out/a; while [ \$i -lt $n ]; do echo \$i > f\$i; i=\$((i+1)); done']
artifacts: [{from: /out}]"
    rm -rf --one-file-system "$dir/state/runs/mem$n"
    /usr/bin/time -f "%M" -o "$results/mem$n.txt" $wrap $bldr run "$dir/mem$n.yaml" --progress none --out "$dir/memout"
done
rm -rf --one-file-system "$dir/memout"

# --- 5. scaling ----------------------------------------------------------------------
settle  # the artifact and memory runs wrote and deleted gigabytes
say "5. start-up with 1, 10 and 100 shared trees"
for n in 1 10 100; do
    shares=""
    for i in $(seq 1 $n); do mkdir -p "$dir/trees/t$i"; shares="$shares{source: $dir/trees/t$i, target: /mnt/t$i}, "; done
    profile "scale$n" "chroot: $root
shared: [${shares%, }]
commands: ['true']"
done
group scaling "--warmup 3 --runs $runs" \
    "1 tree" "$wrap $bldr run $dir/scale1.yaml --progress none" \
    "10 trees" "$wrap $bldr run $dir/scale10.yaml --progress none" \
    "100 trees" "$wrap $bldr run $dir/scale100.yaml --progress none"
rm -rf --one-file-system "$dir/state/runs"

# --- the report ----------------------------------------------------------------------
python3 scripts/bench-report.py "$results" "$dir" "$debian" > docs/benchmarks.md
say "wrote docs/benchmarks.md"
cat docs/benchmarks.md
