"""Benchmark: what one stand-in GCM process costs, per truncation, with a cold and a warm XLA cache.

For each truncation, two processes run one after the other on a fresh compilation cache: the first
compiles everything (what the first job of a workflow pays), the second finds it cached (what every
later job of that truncation pays). Each prints the seconds to import, build the model, make its first
state, run the first 6-h window (tracing and compiling the integration) and then the mean of the next
windows, the truth's way (hourly averages) or the model's (one average per window). The embedded
default's critical path is made of these (benchmarks/README.md).

    .venv/bin/python benchmarks/standin_cost.py [--truth 31,42] [--model 21] [--windows 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from nudgeml.gcm.standin import GCMConfig, StandinGCM, enable_jax_compilation_cache
t1 = time.perf_counter()
truncation, cache, sub_hours, n = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
enable_jax_compilation_cache(cache)
gcm = StandinGCM(GCMConfig(truncation, 8, {}), np.datetime64("2000-01-01T00:00"), window_hours=6.0, sub_hours=sub_hours)
t2 = time.perf_counter()
gcm.start(None)
t3 = time.perf_counter()
gcm.run_window()
t4 = time.perf_counter()
for _ in range(n):
    gcm.run_window()
t5 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "start_s": t3 - t2, "first_window_s": t4 - t3, "window_s": (t5 - t4) / n}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", default="31,42", help="truncations run as the truth (hourly averages)")
    ap.add_argument("--model", default="21", help="truncations run as the model (6-hourly averages)")
    ap.add_argument("--windows", type=int, default=20, help="windows timed after the first")
    args = ap.parse_args()
    print(f"{'run':<22}{'import':>8}{'build':>8}{'start':>8}{'1st win':>9}{'window':>9}{'days/s':>8}   (seconds)")
    runs = [(int(t), 6.0, "model") for t in args.model.split(",") if t] + [(int(t), 1.0, "truth") for t in args.truth.split(",") if t]
    for trunc, sub_hours, role in runs:
        with tempfile.TemporaryDirectory(prefix="nudgeml-xla-") as cache:
            for cache_state in ("cold", "warm"):
                t0 = time.perf_counter()
                res = subprocess.run([sys.executable, "-c", CHILD, str(trunc), str(Path(cache) / "jax"), str(sub_hours), str(args.windows)],
                                     capture_output=True, text=True)
                if res.returncode != 0:
                    print(res.stderr[-3000:], file=sys.stderr)
                    return 1
                r = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"T{trunc} {role} {cache_state:<12}{r['import_s']:8.1f}{r['build_s']:8.1f}{r['start_s']:8.1f}{r['first_window_s']:9.1f}"
                      f"{r['window_s']:9.3f}{0.25 / r['window_s']:8.2f}   (process {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
