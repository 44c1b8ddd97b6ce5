"""The learned sensitivity of a column model to the model's own state at the same level.

A nudging target is the error of a damped, lagged copy of the analysis (``docs/science.md``): regressed
on the model's state x it carries the tracking slope of ``(a - x) / tau`` on x, which ``nudgeml
tracking`` measures on the nudged run. What a trained model learned of it is the diagonal of its
Jacobian in physical units, ``d(dX_k) / d(X_k)`` for every corrected variable X that is also an input
(du on u, dv on v, dt on t, dq on q) at each level k, averaged over columns: negative, the correction
damps the model's own anomalies (a drag on its weather, which the free run feels every step); positive,
it amplifies them. It is a partial derivative (the model's other inputs held), the tracking factors'
"slope on x" a plain regression on that one input: in the same unit (day^-1), but not necessarily of the
same sign.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudgeml.errors import InputError

SECONDS_PER_DAY = 86400.0


def diagonal_sensitivity(
    module: Any,
    x: np.ndarray,
    features: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    *,
    rows_per_batch: int = 8192,
) -> dict[str, np.ndarray]:
    """Mean over the rows of ``x`` of ``d y[dX_k] / d x[X_k]`` (s^-1) per target block ``dX`` whose
    variable ``X`` is an input block with as many levels; ``module`` maps ``(n, n_features)`` float32
    to ``(n, n_targets)`` in physical units (the exported TorchScript). Blocks are ``{"name", "levels"}``
    in column order (the manifest's ``features`` and ``targets``)."""
    import torch

    def offsets(blocks: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
        out, start = {}, 0
        for b in blocks:
            out[str(b["name"])] = (start, int(b["levels"]))
            start += int(b["levels"])
        return out

    fo, to = offsets(features), offsets(targets)
    pairs = {t: (to[t][0], fo[t[1:]][0], to[t][1]) for t in to if t.startswith("d") and t[1:] in fo and fo[t[1:]][1] == to[t][1]}
    if not pairs:
        raise InputError(f"no target block is the tendency of an input block with its levels (targets {list(to)}, inputs {list(fo)})")
    x = np.asarray(x, np.float32)
    sums = {t: np.zeros(n) for t, (_, _, n) in pairs.items()}
    for s in range(0, x.shape[0], rows_per_batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[s:s + rows_per_batch])).requires_grad_(True)
        y = module(xb)
        y = y[0] if isinstance(y, (list, tuple)) else y
        for t, (t0, f0, n) in pairs.items():
            for k in range(n):
                # rows are independent columns: the gradient of the column sum is each row's own
                (g,) = torch.autograd.grad(y[:, t0 + k].sum(), xb, retain_graph=True)
                sums[t][k] += float(g[:, f0 + k].double().sum())
    return {t: v / x.shape[0] for t, v in sums.items()}


def model_sensitivity(model_dir: str | os.PathLike[str], store: str | os.PathLike[str], split: str = "test", max_rows: int = 262144) -> dict[str, Any]:
    """:func:`diagonal_sensitivity` of the exported model in ``model_dir`` on the first ``max_rows`` rows
    of ``split`` of its store (the stored rows are shuffled), in day^-1, with the levels' pressures."""
    import torch

    from nudgeml.data import Segment, SplitArrays
    from nudgeml.evaluate import check_manifest_matches_store
    from nudgeml.manifest import read_manifest

    from nudgeml.models.registry import MODEL_KINDS

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    check_manifest_matches_store(manifest, store, str(model_dir / "model.json"))
    kind = MODEL_KINDS.get(manifest.kind)
    if kind is not None and kind.reads_fields:
        # the store's rows are shuffled columns, not a field: a field model would see nonsense neighbours
        raise InputError(f"{model_dir / 'model.json'}: a {manifest.kind!r} model reads whole fields; the sensitivity is measured on column models")
    arrays = SplitArrays(store, split)
    if arrays.n_rows == 0:
        raise InputError(f"{store}: split {split!r} is empty")
    x, _ = arrays.read(Segment(0, min(arrays.n_rows, max_rows)))
    module = torch.jit.load(str(model_dir / manifest.artifacts["torchscript"]), map_location="cpu").eval()
    blocks = lambda bs: [{"name": b.name, "levels": b.levels} for b in bs]  # noqa: E731
    per_s = diagonal_sensitivity(module, x, blocks(manifest.features), blocks(manifest.targets))
    return {
        "model": manifest.name,
        "split": split,
        "rows": int(x.shape[0]),
        "levels_hpa": [float(p) / 100.0 for p in manifest.levels.values],
        "per_day": {t: [float(v) * SECONDS_PER_DAY for v in s] for t, s in per_s.items()},
    }


def format_sensitivity(result: Mapping[str, Any]) -> str:
    """The per-level table and the level mean, as ``nudgeml sensitivity`` prints it."""
    names = list(result["per_day"])
    lines = [f"{result['model']}: mean d(dX_k)/d(X_k) over {result['rows']} {result['split']} columns, day^-1 "
             "(negative: the correction damps the model's own anomalies)",
             f"{'level hPa':>10}" + "".join(f"{n + ' on ' + n[1:]:>12}" for n in names)]
    for k, p in enumerate(result["levels_hpa"]):
        lines.append(f"{p:>10.0f}" + "".join(f"{result['per_day'][n][k]:>12.3f}" for n in names))
    lines.append(f"{'mean':>10}" + "".join(f"{np.mean(result['per_day'][n]):>12.3f}" for n in names))
    return "\n".join(lines)
