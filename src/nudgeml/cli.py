"""``nudgeml`` command: small helpers around the workflow's outputs (the workflow itself is Snakemake)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nudgeml", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print a report's comparison table as Markdown")
    s.add_argument("report_dir", type=Path, help="the report folder (holds metrics.json), e.g. results/science/report")
    s.add_argument("--models", type=Path, default=None, help="models folder, to add offline R² (default: ../models)")
    args = ap.parse_args(argv)
    from nudgeml.report import summary_markdown

    metrics_path = args.report_dir / "metrics.json"
    if not metrics_path.exists():
        print(f"{metrics_path}: not found (run the report rule first)", file=sys.stderr)
        return 2
    metrics = json.loads(metrics_path.read_text())
    models = args.models or args.report_dir.parent / "models"
    offline = {}
    for f in sorted(models.glob("*/offline.json")):
        res = json.loads(f.read_text())
        offline[res["model"]] = sum(t["r2_overall"] for t in res["targets"].values()) / len(res["targets"])
    print(summary_markdown(metrics, offline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
