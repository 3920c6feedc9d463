#!/usr/bin/env python3
"""Times commands interleaved: ROUNDS rounds, each running every command once in a fresh
random order, then prints each command's median and minimum wall time.

    scripts/interleave.py [--json FILE] ROUNDS [-n NAME] COMMAND [[-n NAME] COMMAND ...]

hyperfine runs one command's runs back to back, so a noisy machine (a VM, a busy CI
host) can favour whichever command ran in a quiet minute; interleaving spreads the noise
over all of them (hyperfine has no such mode: sharkdp/hyperfine#21). `make bench` judges
its ratio targets this way, and docs/benchmarks.md's tables of changes were measured
this way, with one old and one new bldr binary per row:

    scripts/interleave.py 300 "unshare --mount --propagation private -- OLD run startup.yaml --progress none" \\
                              "unshare --mount --propagation private -- NEW run startup.yaml --progress none"

Each command is a whitespace-split argument list (no shell); its output is discarded.
`--json FILE` also writes every command's name, median, mean, minimum and times (seconds).
"""
import json
import os
import random
import shlex
import shutil
import statistics
import sys
import time


def parse(args: list) -> tuple:
    json_path = None
    if args[:1] == ["--json"]:
        json_path, args = args[1], args[2:]
    if len(args) < 2:
        sys.exit(__doc__)
    rounds, args = int(args[0]), args[1:]
    named = []
    while args:
        name = None
        if args[0] == "-n":
            name, args = args[1], args[2:]
        named.append((name or args[0], args[0]))
        args = args[1:]
    return json_path, rounds, named


def main() -> None:
    json_path, rounds, named = parse(sys.argv[1:])
    commands = [shlex.split(c) for _, c in named]
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
    for (name, _), t in zip(named, times):
        print(f"{statistics.median(t) * 1000:7.2f} ms median {min(t) * 1000:7.2f} ms min  {name}")
    if json_path:
        results = [
            {
                "command": name,
                "median": statistics.median(t),
                "mean": statistics.mean(t),
                "min": min(t),
                "times": t,
            }
            for (name, _), t in zip(named, times)
        ]
        with open(json_path, "w") as f:
            json.dump({"rounds": rounds, "results": results}, f)


if __name__ == "__main__":
    main()
