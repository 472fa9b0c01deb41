"""Summarise a py-spy raw profile of `serve`: the inclusive share of each frame among the
main thread's busy samples (waiting in the selector excluded), as quoted in
docs/benchmark-profiles.md.

    py-spy record -p <serve pid> -d 10 -f raw -o profile.txt --nonblocking
    python -m bench.profile_summary profile.txt [--top 60]

py-spy is not a dependency (`pip install py-spy`); record while a row's load runs (e.g.
`python -m bench.run --rows 1 --servers daphne --no-baselines` in another terminal).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

IDLE = ("EpollSelector.select", "_PollLikeSelector.select")


def busy_main_thread(path: Path) -> tuple[int, collections.Counter[str]]:
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("Command.handle" in frame for frame in frames):
            continue  # a worker thread (the database's, the thread pool's)
        if frames[-1].startswith(IDLE):
            continue
        total += int(count)
        for frame in set(frames):
            shares[frame] += int(count)
    return total, shares


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=60)
    args = parser.parse_args(argv)
    total, shares = busy_main_thread(args.profile)
    print(f"{total} busy main-thread samples")
    for frame, count in shares.most_common(args.top):
        print(f"{100 * count / max(1, total):5.1f}%  {frame[:140]}")


if __name__ == "__main__":
    main()
