"""LMDZE's time per simulated day with and without the ML refresh inside its physics (issue 15).

For each grid (``--grids``, default LMDZE's default 16x12x11 and 48x32x19), on a synthetic truth
(``tests/lmdze_inputs.write_truth_era5``: an idealised Earth written as ERA5 files):

1. one guided day of the ``lmdze`` backend (its registry runner), whose columns give an MLP of the
   shape `config/lmdze.yaml` trains (3 x 128 SiLU, u v t q on every level + ps + sin/cos lat -> du dv),
   exported untrained: the cost of a call depends on the model's size, not its weights;
2. free runs of ``--days`` days from the truth, taking turns ``--rounds`` times: ``control`` (the
   physics hook off), ``mean`` (the mean tendency added every physics step) and ``ml`` (the model
   through the bridge every 6 h, with the guard), each timed as ``gcm``'s wall time alone.

It prints the median seconds per simulated day and the ML refresh's share of the run,
``(ml - control) / ml`` — the ratios of medians, measured in the same run, so a slow spell of a
shared machine hits all runs alike — and, because a corrected run follows another trajectory whose
physics costs a few per cent more or less, the physics hook's own wall time measured inside ``gcm``
(``nudgeml: wall seconds`` in its log) as a share of ``gcm``'s. The ML run's first refresh is checked against the Python model
bit for bit by the runner before any time is printed. Needs LMDZE built (``scripts/build_lmdze.sh``).

    python benchmarks/lmdze_refresh.py [--grids 16x12x11,48x32x19] [--days 2] [--rounds 3] [--out DIR]
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lmdze_inputs import export_untrained_mlp, write_truth_era5  # noqa: E402

from nudgeml.extract import ColumnSpec, column_dataset  # noqa: E402
from nudgeml.gcm.registry import BACKENDS  # noqa: E402
from nudgeml.mean_tendency import mean_tendency, write_mean_tendency  # noqa: E402

START = "2000-01-31T00:00"
SPEC = {"level_inputs": ["u", "v", "t", "q"], "surface_inputs": ["ps"], "geo": ["sin_lat", "cos_lat"], "targets": ["du", "dv"],
        "history_names": {"u": "vitu", "v": "vitv", "t": "temp", "q": "ovap", "ps": "psol"}}


def _end(days: int) -> str:
    return str(np.datetime64(START, "s") + np.timedelta64(days, "D"))


def grid_case(root: Path, era5: dict, grid: dict, days: int, rounds: int) -> dict:
    guided = {"histhf": str(root / "nudged" / "histhf.nc"), "guide": str(root / "nudged" / "guide_ins.nc")}
    BACKENDS["lmdze"].runner("guided")({"period": {"start": START, "end": _end(1)}, "nudging": {"tau_hours": 6.0}, "lmdze": grid,
                                        "run_dir": str(root / "lmdze" / "guided")}, era5, guided)
    mean = root / "mean_tendency.nc"
    write_mean_tendency(mean_tendency(guided["guide"], [(np.datetime64("2000-01-01"), np.datetime64("2000-03-01"))]), mean)
    cols = column_dataset(guided["histhf"], guided["guide"], None, ColumnSpec.from_config(SPEC))
    model = export_untrained_mlp(cols, root / "model", hidden=(128, 128, 128))
    runs = {"control": {"correction": "none"}, "mean": {"correction": "mean"}, "ml": {"correction": "ml", "model": "mlp"}}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    statuses = {}
    for _ in range(rounds):
        for name, spec in runs.items():
            cfg = {"free_runs": {"start": START, "end": _end(days), "runs": {name: spec}}, "lmdze": grid,
                   "run_dir": str(root / "lmdze" / "free" / name)}
            inputs = dict(era5, **({"mean": str(mean)} if name != "control" else {}),
                          **({"manifest": str(model / "model.json")} if name == "ml" else {}))
            out = {"histhf": str(root / "free" / name / "histhf.nc"), "status": str(root / "free" / name / "status.json")}
            BACKENDS["lmdze"].runner("free")(cfg, name, inputs, out)
            statuses[name] = json.loads(Path(out["status"]).read_text())
            seconds[name].append(statuses[name]["gcm_s"])
    med = {name: statistics.median(s) / days for name, s in seconds.items()}
    return {"grid": grid, "klon": grid["iim"] * (grid["jjm"] - 1) + 2, "s_per_day": med, "all_s": seconds,
            "ml_share": (med["ml"] - med["control"]) / med["ml"], "mean_share": (med["mean"] - med["control"]) / med["mean"],
            "refreshes": statuses["ml"]["guard"]["refreshes"], "fallback_share": statuses["ml"]["guard"]["fallback_columns"] / statuses["ml"]["guard"]["columns"],
            "refresh_bitwise": statuses["ml"]["refresh_check"]["bitwise"],
            # the hook's own wall time in the last round's runs (s), measured inside gcm: not confounded by
            # the runs' different trajectories, which change the physics' own cost by a few per cent
            "hook_s": {name: st.get("hook") for name, st in statuses.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", default="16x12x11,48x32x19", help="iim x jjm x llm, comma-separated")
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lmdze-bench-") as tmp:
        root = args.out or Path(tmp)
        era5 = {k: [str(v)] if k != "invariant" else str(v)
                for k, v in write_truth_era5(root / "truth", np.datetime64(START), records=4 * max(args.days, 1) + 1).items()}
        results = []
        for g in args.grids.split(","):
            iim, jjm, llm = (int(n) for n in g.split("x"))
            r = grid_case(root / g, era5, {"iim": iim, "jjm": jjm, "llm": llm}, args.days, args.rounds)
            results.append(r)
            s = r["s_per_day"]
            print(f"LMDZE {g} ({r['klon']} columns), {args.days} days x {args.rounds} rounds: s per simulated day "
                  f"control {s['control']:.3f}, mean {s['mean']:.3f}, ml {s['ml']:.3f}; ML refresh share {100 * r['ml_share']:.1f} % "
                  f"(mean tendency {100 * r['mean_share']:.1f} %), {r['refreshes']} refreshes, first refresh bitwise: {r['refresh_bitwise']}",
                  flush=True)
            for name in ("mean", "ml"):
                h = r["hook_s"][name]
                print(f"  {name}: the hook's own wall time {h['init_s']:.3f} s at start (settings, model load) + {h['steps_s']:.3f} s "
                      f"in the steps = {100 * h['share']:.2f} % of gcm's", flush=True)
        if args.out:
            (args.out / "lmdze_refresh.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
