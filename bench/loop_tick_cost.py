"""What a periodic event-loop timer costs by itself: CPU share of a bare asyncio loop whose only
work is one callback every ``interval`` (0 = no timer), for the loop lag monitor's tick
(``node.loop_lag_interval``). No root, nothing else runs.

``python -m bench.loop_tick_cost`` on the host; in the virtme-ng guest under TCG:
``vng --run /boot/vmlinuz-<ver> --disable-kvm --memory 1G --cpus 2 --exec
"python3 bench/loop_tick_cost.py"`` (from the repository root). Results: bench/NOTES.md.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time


async def share(interval: float, seconds: float) -> float:
    """Percent of one CPU the process used over ``seconds`` with a ``interval`` tick."""
    loop = asyncio.get_running_loop()

    def tick() -> None:
        loop.call_later(interval, tick)

    if interval:
        loop.call_later(interval, tick)
    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    used = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return 100.0 * used / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("intervals", nargs="*", type=float, default=[0.0, 0.01, 0.1])
    args = ap.parse_args()
    for interval in args.intervals:
        print(f"interval {interval:g} s: {asyncio.run(share(interval, args.seconds)):.2f} % CPU")


if __name__ == "__main__":
    main()
