#!/usr/bin/env python3
"""Turns the hyperfine exports of scripts/bench.sh into docs/benchmarks.md."""
import json
import os
import platform
import subprocess
import sys

results, bench_dir, debian = sys.argv[1], sys.argv[2], sys.argv[3]


def load(name):
    with open(os.path.join(results, name)) as f:
        return {r["command"]: r for r in json.load(f)["results"]}


def ms(x):
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:
        return "unknown"


def ratio_table(rows, base, header):
    """A markdown table of hyperfine results with each median divided by `base`'s."""
    lines = [f"| command | median | mean ± σ | min | {header} |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {ms(r['median'])} | {ms(r['mean'])} ± {ms(r['stddev'] or 0)} | {ms(r['min'])} "
            f"| {r['median'] / base['median']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


out = []
w = out.append
w("# Benchmarks\n")
w("Made by `make bench` (scripts/bench.sh): bldr and its peers side by side in one run of")
w("[hyperfine](https://github.com/sharkdp/hyperfine) on the same work. Numbers are what that")
w("run measured on the machine below; rerun `make bench` to get yours. Every command runs")
w("inside `unshare --mount --propagation private` so that the chroot script, too, mounts")
w("nothing on the host (the floor, bare `unshare` + `chroot`, is its own namespace).\n")
cpu = "unknown"
try:
    with open("/proc/cpuinfo") as f:
        cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
except Exception:
    pass
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
w("## Machine\n")
w(f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem:.0f} GiB")
w(f"- kernel {platform.release()}; {version(['sh', '-c', '. /etc/os-release; echo $PRETTY_NAME'])}")
w(f"- {version([os.environ.get('BLDR', os.path.join(os.getcwd(), 'target/release/bldr')), '--version'])}; {version(['bwrap', '--version'])}; "
  f"{version(['systemd-nspawn', '--version'])}; {version(['hyperfine', '--version'])}\n")

s = load("startup.json")
w("## 1. Start-up\n")
w("One command (`true`) in a busybox root with /proc, /dev, a tmpfs and one shared tree.")
w("The ratio is each peer's median over bldr's (above 1: bldr is faster). Target: bldr's")
w("median at most 1.0× bwrap's, though bldr also writes a run record, a log and a report.\n")
bl = s["bldr"]
w(ratio_table(s, bl, "peer ÷ bldr"))
w(f"bldr ÷ bwrap: **{bl['median'] / s['bwrap']['median']:.2f}×** (target ≤ 1.0×).\n")
if "bwrap, sh -c true" in s:
    w("A bldr command is a shell script (`/bin/sh -c true`, SPEC §1), so the row `bwrap, sh -c")
    w("true` is bwrap doing exactly bldr's work; the target above is against the plain")
    w(f"`/bin/true`. bldr ÷ bwrap running `sh -c true`: {bl['median'] / s['bwrap, sh -c true']['median']:.2f}×.\n")

e = load("ephemeral.json")
x = load("nspawn-x.json")
size = subprocess.run(["du", "-sh", "--apparent-size", debian], capture_output=True, text=True).stdout.split()[0]
w("## 2. Ephemeral runs\n")
w(f"`true` in a {size} Debian bookworm root (debootstrap, variant buildd). bldr's overlay costs")
w("the same whatever the root's size; `systemd-nspawn -x` on ext4 copies the whole tree.")
w("Target: ephemeral at most 1.2× non-ephemeral.\n")
allrows = {**e, **x}
base = allrows["bldr"]
w(ratio_table(allrows, base, "÷ bldr non-ephemeral"))
w(f"bldr --ephemeral ÷ bldr: **{allrows['bldr --ephemeral']['median'] / base['median']:.2f}×** (target ≤ 1.2×).\n")

a = load("artifacts.json")
w("## 3. Artifact collection\n")
files = sum(len(fs) for _, _, fs in os.walk(os.path.join(bench_dir, "files")))
total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(bench_dir, "files")) for f in fs)
w(f"{files} files, {total / 1e9:.2f} GB in all, from a read-only shared tree into the run")
w("directory with a sha256 manifest (`SHA256SUMS`), against `cp -a` followed by `sha256sum`.")
w("Target: at most 1.0×.\n")
cp = a["cp -a + sha256sum"]
w(ratio_table(a, cp, "÷ cp -a + sha256sum"))
w(f"bldr ÷ cp -a + sha256sum: **{a['bldr (copy + SHA256SUMS)']['median'] / cp['median']:.2f}×** (target ≤ 1.0×).\n")

w("## 4. Memory\n")
mems = {}
for f in sorted(os.listdir(results)):
    if f.startswith("mem") and f.endswith(".txt"):
        n = int(f[3:-4])
        with open(os.path.join(results, f)) as fh:
            mems[n] = int(fh.read().strip().splitlines()[-1])
w("Peak RSS (GNU time's `%M`, the largest of bldr's processes) collecting small files")
w("created by the build in a tmpfs. Target: flat, at most 1.5× from 1,000 to 100,000 files.\n")
w("| files | peak RSS |\n|---|---|")
for n, kb in sorted(mems.items()):
    w(f"| {n:,} | {kb / 1024:.1f} MiB |")
if len(mems) >= 2:
    lo, hi = mems[min(mems)], mems[max(mems)]
    w(f"\nratio: **{hi / lo:.2f}×** (target ≤ 1.5×).\n")

sc = load("scaling.json")
w("## 5. Scaling with shared trees\n")
w("| shared trees | median | mean ± σ |\n|---|---|---|")
for name, r in sc.items():
    w(f"| {name} | {ms(r['median'])} | {ms(r['mean'])} ± {ms(r['stddev'] or 0)} |")
one, hundred = sc["1 tree"]["median"], sc["100 trees"]["median"]
w(f"\ncost per extra mount: **{(hundred - one) / 99 * 1e6:.0f} µs** ((100 trees − 1 tree) ÷ 99).\n")

w("## Where the time goes, and what was changed\n")
w("Measured while making bldr, on the same machine; kept here because `make bench` only")
w("shows the current state.\n")
w("- **Start-up (target missed).** callgrind (`valgrind --tool=callgrind --trace-children=yes`)")
w("  counts about 1.5 M instructions in bldr's main process and 0.8 M in each of the monitor")
w("  and init: well under a millisecond of CPU. The rest is process creation. bldr re-execs")
w("  itself once (the monitor; namespaces are never created in the threaded main process)")
w("  and every exec of the 27 MB binary costs about 0.9 ms against 0.4 ms for `/bin/true`")
w("  (hyperfine `bldr --version`); init then forks `/bin/sh`. bwrap is one small C")
w("  process that writes no record.")
w("  - Before: three fdatasync calls per run (log, report, index). On an idle disk 5.8 ms,")
w("    under load from a parallel build 16–20 ms with 8 ms σ. After removing them (the")
w("    report is still replaced by rename, so never half-visible): 5.6 ms idle, and the")
w("    load no longer shows in the start-up.")
w("  - Tried and not kept: a static-pie build (5.9 → 5.5 ms; it needs an explicit")
w("    `--target` and changes every build path) and fat LTO with one codegen unit (no")
w("    measurable change, 1m45s builds).")
w("- **Memory (target met after a fix).** Before: 5.2 MiB for 1,000 files, 25.4 MiB for")
w("  100,000 (4.9×): the report was serialised into memory whole. After streaming it to")
w("  disk: 5.2 MiB for both.")
w("- **Ephemeral.** The overlay mount itself takes about 0.2 ms (strace -T); most of the")
w("  difference is creating and removing the scratch folder (about 0.3 ms for removal).\n")
w("## The commands\n")
w("Exactly as scripts/bench.sh ran them (paths below its scratch folder):\n")
with open(os.path.join(results, "commands.tsv")) as f:
    for line in f:
        section, name, cmd = line.rstrip("\n").split("\t", 2)
        w(f"- {section} / {name}: `{cmd}`")
w("")
print("\n".join(out))
