"""Benchmark: training throughput vs the loader alone, in one run (samples/s).

The loader must not be the bottleneck: its throughput over the same store and batch size should be at
least 3x the training throughput (goal on CPU). Uses a synthetic store of LMDZ width (317 features,
158 targets) unless ``--store`` points at a real one, and the MLP settings of ``config/config.yaml``.

    .venv/bin/python benchmarks/train_throughput.py [--store results/dataset.zarr] [--samples 262144]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--samples", type=int, default=262144)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    from nudgeml.data import ColumnBatches
    from nudgeml.models.mlp import MLPConfig, train_mlp
    from synthetic import linear_store

    work = Path(tempfile.mkdtemp(prefix="train-tp-"))
    try:
        if args.store is None:
            ncol = 2048
            store, _ = linear_store(work / "ds.zarr", nlev=79, ntime=max(2, round(args.samples / 0.7 / ncol)), ncol=ncol, chunk_samples=4096, shard_samples=524288)
        else:
            store = Path(args.store)
        section = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]["mlp"]
        cfg = MLPConfig.from_config({**section, "max_epochs": 1, "num_workers": args.workers})
        loader = torch.utils.data.DataLoader(ColumnBatches(store, "train", cfg.batch_size, seed=0), batch_size=None, num_workers=args.workers)
        t0 = time.perf_counter()
        n = sum(x.shape[0] for x, _ in loader)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_mlp(store, work / "mlp", cfg)
        t_train = time.perf_counter() - t0
        load_sps, train_sps = n / t_load, n / t_train
        print(f"train split: {n} samples, batch {cfg.batch_size}, MLP {list(cfg.hidden)}, {torch.get_num_threads()} threads, workers {args.workers}")
        print(f"loader alone   {load_sps:12.0f} samples/s")
        print(f"training       {train_sps:12.0f} samples/s (one epoch incl. validation and checkpointing)")
        print(f"ratio loader/training {load_sps / train_sps:.1f} (goal >= 3)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
