#!/usr/bin/env python3
"""Times commands interleaved: ROUNDS rounds, each running every command once in a fresh
random order, then prints each command's median and minimum wall time.

hyperfine runs one command's runs back to back, so a noisy machine (a VM, a busy CI
host) can favour whichever command ran in a quiet minute. Interleaving spreads the noise
over all of them; docs/benchmarks.md's table of start-up changes was measured this way,
with one old and one new bldr binary per row:

    scripts/interleave.py 300 "unshare --mount --propagation private -- OLD run startup.yaml --progress none" \
                              "unshare --mount --propagation private -- NEW run startup.yaml --progress none"

Each command is a whitespace-split argument list (no shell); its output is discarded.
"""
import os
import random
import shlex
import shutil
import statistics
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    commands = [shlex.split(c) for c in sys.argv[2:]]
    for c in commands:
        c[0] = shutil.which(c[0]) or c[0]
    devnull = os.open(os.devnull, os.O_WRONLY)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]

    def run(argv: list) -> float:
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        os.waitpid(pid, 0)
        return time.perf_counter() - start

    for c in commands:  # warm-up
        for _ in range(5):
            run(c)
    times = [[] for _ in commands]
    for _ in range(rounds):
        order = list(range(len(commands)))
        random.shuffle(order)
        for i in order:
            times[i].append(run(commands[i]))
    for text, t in zip(sys.argv[2:], times):
        print(f"{statistics.median(t) * 1000:7.2f} ms median {min(t) * 1000:7.2f} ms min  {text}")


if __name__ == "__main__":
    main()
