"""Bookkeeping cost of a fan-out step on the local store, against a plain loop in the same run.

Measures, as medians of several repetitions:

- a plain ``[fn(item) for item in items]`` over N trivial items (the baseline);
- ``map_step`` over the same items in a flow on a fresh local directory (the whole ``cp.run``,
  including saving the item list and the gathered results);
- the rerun after a run that failed with 99% of the items finished.

Usage: ``python benchmarks/bench_fanout.py [--items 100000] [--repeat 5]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from checkpoint_flow import CheckpointFlow, FanOutError

# Items at or above this index fail while it is set; the function's code stays the same, so the
# rerun reuses the finished items.
STOP_AT: list[int | None] = [None]


def work(item: int) -> int:
    stop = STOP_AT[0]
    if stop is not None and item >= stop:
        raise RuntimeError("stopped for the benchmark")
    return item + 1


def timed(fn: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def flow(location: str, commit_every: int) -> CheckpointFlow:
    cp = CheckpointFlow(location)
    cp.map_step(items=lambda state: state["items"], name="work", commit_every=commit_every)(work)
    return cp


def bench(n: int, repeat: int, commit_every: int) -> dict[str, float]:
    items = list(range(n))
    loops, runs, reruns = [], [], []
    for _ in range(repeat):
        loops.append(timed(lambda: [work(i) for i in items]))
        with tempfile.TemporaryDirectory() as location:
            cp = flow(location, commit_every)
            runs.append(timed(cp.run, {"items": items}))
        with tempfile.TemporaryDirectory() as location:
            cp = flow(location, commit_every)
            STOP_AT[0] = n - n // 100
            try:
                cp.run({"items": items})
            except FanOutError:
                pass
            STOP_AT[0] = None
            cp = flow(location, commit_every)  # a new process would start from here
            reruns.append(timed(cp.run, {"items": items}))
    return {
        "loop": statistics.median(loops),
        "run": statistics.median(runs),
        "rerun": statistics.median(reruns),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the deliberate failures of the 99% runs
    n = args.items
    rows = []
    for commit_every in (100, 1000):  # 1000 is the default
        r = bench(n, args.repeat, commit_every)
        overhead_ms = (r["run"] - r["loop"]) / n * 1e3
        rows.append(
            f"| {commit_every} | {r['loop']:.3f} | {r['run']:.3f} | {overhead_ms:.4f} "
            f"| {r['rerun']:.3f} |"
        )
    print(f"{n:,} trivial items, local store, medians of {args.repeat} runs; "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} cores\n")
    print("| commit_every | plain loop (s) | map_step run (s) | overhead per item (ms) "
          "| rerun, 99% done (s) |")
    print("|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
