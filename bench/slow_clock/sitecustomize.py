"""Imported at start-up by the servers `bench/instructions.py` runs under callgrind (this directory is first
on their PYTHONPATH): their monotonic clock runs BENCH_CLOCK_SCALE times slower than the wall's.

Under callgrind a server runs ~25x slower, so everything it does on a timer (a cache read again every
2 s, the writer's flush every second, a spend refresh every 10 s) would happen ~25x as often per call as
in a real run, and be counted as the calls' cost. With its clock slowed by about as much as its work,
timers fall as often per call as they do at full speed. asyncio's loop and every timer the server sets
read `time.monotonic`; `time.perf_counter` (call durations) is left alone. Never used by the gateway.
"""

import os
import time

_scale = float(os.environ.get("BENCH_CLOCK_SCALE", "1"))
if _scale != 1:
    _wall, _wall_ns = time.monotonic, time.monotonic_ns
    _origin, _origin_ns = _wall(), _wall_ns()

    def _slowed() -> float:
        return _origin + (_wall() - _origin) / _scale

    def _slowed_ns() -> int:
        return _origin_ns + int((_wall_ns() - _origin_ns) / _scale)

    time.monotonic = _slowed
    time.monotonic_ns = _slowed_ns
