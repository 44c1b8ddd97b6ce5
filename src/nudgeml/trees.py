"""XGBoost ensembles compiled to C (treelite + tl2cgen): the online path of the ``xgboost`` kind.

Why. The TorchScript walker of :mod:`nudgeml.models.xgb` (``TreeEnsemble``: every tree advances one
level per step with tensor gathers) costs several times the booster's own prediction;
``benchmarks/tree_call.py`` records the sweep. treelite reads the booster and tl2cgen writes the
ensemble as C (the trees as nested ``if``s); we add one C function around it and the system ``gcc``
builds both into ``model_trees.so``. hummingbird-ml 0.4.12 (the tensor-program alternative) cannot
read this booster: it parses XGBoost's ``base_score`` as one float, and XGBoost 3 writes one per
target (``one_output_per_tree``).

The library's C ABI (what the Python free run calls through ctypes and Fortran through
``iso_c_binding``, ``fortran/src/nudgeml_trees.f90``), no libtorch needed::

    int64_t nudgeml_trees_n_features(void);
    int64_t nudgeml_trees_n_targets(void);
    int nudgeml_trees_predict(int64_t n, const float *x, float *y);  /* 0 on success */

``x`` is ``(n, n_features)`` float32 row-major (a Fortran ``x(n_features, n)``), physical units, NaN
for a missing value (the trees' default directions); ``y`` is ``(n, n_targets)`` in physical units:
the model contract of every kind (``docs/model-format.md``); the guard stays the caller's.

The map from the trees' sums to physical targets is compiled in, the same arithmetic as
``TreeEnsemble`` in float64: ``y = ((raw + intercept) @ modes) * target_std + target_mean``. The
intercept is added there, not by tl2cgen: tl2cgen 1.0.0 (built on treelite 4.1) applies the first
target's ``base_score`` to every target of a multi-target booster, so the C is generated from the
booster with a zero ``base_score``.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import numpy as np

from nudgeml.atomic import synced_atomic_path
from nudgeml.errors import InputError

TREE_BACKEND: Final = "tl2cgen"  # the manifest's ``tree_backend`` for a compiled ensemble
LIBRARY_NAME: Final = "model_trees.so"

TREES_PER_UNIT: Final = 8  # trees per generated C function: one function's code stays in the L1 i-cache
BLOCK_ROWS: Final = 1024  # rows walked through one function before the next (benchmarks/README.md: the sweep)

_WRAPPER: Final = r"""/* nudgeml: physical features in, physical targets out, around tl2cgen's tree functions (nudgeml.trees) */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "header.h"

#define NML_NF {nf}
#define NML_NK {nk}
#define NML_NT {nt}
#define NML_NU {nu}
#define NML_BLOCK {block}

/* y = raw @ weight + bias, weight = modes * target_std, bias = (intercept @ modes) * target_std + target_mean */
static const double nml_weight[NML_NK][NML_NT] = {{{weight}}};
static const double nml_bias[NML_NT] = {{{bias}}};
/* tl2cgen's predict() runs every unit for one row: 600 trees of nested ifs are ~1 MB of code, streamed
   through the instruction cache once per row. Here each unit runs over a block of rows before the next:
   the same additions in the same order (tree order), so the same sums, with the code cache-resident. */
static void (*const nml_units[NML_NU])(union Entry *, float *) = {{{units}}};

int64_t nudgeml_trees_n_features(void) {{ return NML_NF; }}
int64_t nudgeml_trees_n_targets(void) {{ return NML_NT; }}

int nudgeml_trees_predict(int64_t n, const float *x, float *y) {{
  if (n < 0 || (n > 0 && (x == NULL || y == NULL))) return 1;
  if (n == 0) return 0;
  /* per call, on the heap: each OpenMP thread its own, and a block too large for a thread's stack */
  union Entry (*rows)[NML_NF] = malloc(sizeof(union Entry[NML_BLOCK][NML_NF]));
  float (*raw)[NML_NK] = malloc(sizeof(float[NML_BLOCK][NML_NK]));
  if (rows == NULL || raw == NULL) {{ free(rows); free(raw); return 2; }}
  for (int64_t i0 = 0; i0 < n; i0 += NML_BLOCK) {{
    const int nb = (int)(n - i0 < NML_BLOCK ? n - i0 : NML_BLOCK);
    for (int r = 0; r < nb; ++r) {{
      const float *xi = x + (i0 + r) * NML_NF;
      for (int j = 0; j < NML_NF; ++j) {{
        if (isnan(xi[j])) rows[r][j].missing = -1; /* tl2cgen's mark of a missing value */
        else rows[r][j].fvalue = xi[j];
      }}
    }}
    memset(raw, 0, sizeof(float[NML_BLOCK][NML_NK])); /* every tree adds its leaf to raw */
    for (int u = 0; u < NML_NU; ++u)
      for (int r = 0; r < nb; ++r) nml_units[u](rows[r], raw[r]);
    for (int r = 0; r < nb; ++r) {{
      float *yi = y + (i0 + r) * NML_NT;
      for (int t = 0; t < NML_NT; ++t) {{
        double s = nml_bias[t];
        for (int k = 0; k < NML_NK; ++k) s += (double)raw[r][k] * nml_weight[k][t];
        yi[t] = (float)s;
      }}
    }}
  }}
  free(rows);
  free(raw);
  return 0;
}}
"""


def zero_intercept_json(booster: Any) -> str:
    """The booster's JSON with ``base_score`` set to zero for every target (see the module note)."""
    model = json.loads(bytes(booster.save_raw("json")))
    param = model["learner"]["learner_model_param"]
    raw = param["base_score"]
    param["base_score"] = "[" + ",".join("0.0" for _ in json.loads(raw)) + "]" if raw.startswith("[") else "0.0"
    return json.dumps(model)


def output_map(intercept: np.ndarray, modes: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (K, T), bias (T,))`` in float64 with ``y = raw @ weight + bias``."""
    intercept, modes = np.asarray(intercept, np.float64), np.asarray(modes, np.float64)
    std, mean = np.asarray(target_std, np.float64), np.asarray(target_mean, np.float64)
    k, t = modes.shape
    if intercept.shape != (k,) or mean.shape != (t,) or std.shape != (t,):
        raise ValueError(f"tree output map: intercept {intercept.shape}, modes {modes.shape}, mean {mean.shape}, std {std.shape} disagree")
    return modes * std, (intercept @ modes) * std + mean


def _c_doubles(a: np.ndarray) -> str:
    return ",".join(repr(float(v)) for v in np.ravel(a))


# A missing value reaches the trees as ``missing = -1``: as a float those bits are a NaN, and every
# comparison with a NaN is false. So tl2cgen's two forms of a split, default right
# ``(missing != -1) && (fvalue < t)`` and default left ``!(missing != -1) || (fvalue < t)``, are exactly
# ``fvalue < t`` and ``!(fvalue >= t)``: one test per node instead of two (benchmarks/tree_call.py).
_THRESHOLD = r"(\(float\)[-+0-9.eE]+)"
_DEFAULT_RIGHT = re.compile(r"\(data\[(\d+)\]\.missing != -1\) && \(data\[\1\]\.fvalue < " + _THRESHOLD + r"\)")
_DEFAULT_LEFT = re.compile(r"!\(data\[(\d+)\]\.missing != -1\) \|\| \(data\[\1\]\.fvalue < " + _THRESHOLD + r"\)")


def one_test_per_split(c_source: str) -> tuple[str, int]:
    """``c_source`` with each split's missing-value test folded into its comparison (same branches for
    every input, NaN included); returns the source and the number of splits rewritten. A split in any
    other form is left as it is."""
    c_source, n_right = _DEFAULT_RIGHT.subn(r"(data[\1].fvalue < \2)", c_source)
    c_source, n_left = _DEFAULT_LEFT.subn(r"!(data[\1].fvalue >= \2)", c_source)
    return c_source, n_right + n_left


def compile_trees(booster: Any, path: str | os.PathLike[str], *, intercept: np.ndarray, modes: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray, threads: int = 1,
                  trees_per_unit: int = TREES_PER_UNIT, block_rows: int = BLOCK_ROWS) -> Path:
    """Compile ``booster`` and its output map to the shared library ``path`` with the system gcc.

    Atomic: the build runs in a temporary directory beside ``path``; a failed or interrupted build
    leaves no library under ``path``. ``threads`` gcc jobs build the C files in parallel.
    """
    import tl2cgen
    import treelite

    path = Path(path)
    n_features = int(booster.num_features())
    weight, bias = output_map(intercept, modes, target_mean, target_std)
    model = treelite.frontend.from_xgboost_json(zero_intercept_json(booster))
    path.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{path.stem}.build.", dir=path.parent))
    try:
        # parallel_comp splits the trees over that many C files and functions (units): small units keep
        # one function's code in the instruction cache while it walks a block of rows (the wrapper), and
        # gcc's time grows faster than linearly with a function's size
        units = max(2, -(-int(model.num_tree) // max(1, int(trees_per_unit))))
        tl2cgen.generate_c_code(model, str(build), params={"parallel_comp": units})
        for unit in build.glob("tu*.c"):
            unit.write_text(one_test_per_split(unit.read_text(encoding="utf-8"))[0], encoding="utf-8")
        recipe = json.loads((build / "recipe.json").read_text(encoding="utf-8"))
        names = [f"predict_unit{k}" for k in range(sum(src["name"].startswith("tu") for src in recipe["sources"]))]
        (build / "nudgeml_trees.c").write_text(_WRAPPER.format(nf=n_features, nk=weight.shape[0], nt=weight.shape[1], nu=len(names), block=int(block_rows),
                                                               weight=_c_doubles(weight), bias=_c_doubles(bias), units=", ".join(names)), encoding="utf-8")
        recipe["sources"].append({"name": "nudgeml_trees", "length": 1})
        (build / "recipe.json").write_text(json.dumps(recipe), encoding="utf-8")
        built = Path(tl2cgen.create_shared("gcc", str(build), nthread=max(1, int(threads)), long_build_time_warning=False))
        with synced_atomic_path(path, suffix=".so") as tmp:
            shutil.copyfile(built, tmp)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return path


class CompiledTrees:
    """A compiled ensemble (``model_trees.so``): ``(n, n_features)`` float32 physical -> ``(n, n_targets)``.

    Called with a numpy array it returns one; with a torch tensor, a tensor (so it stands in for a
    TorchScript module in the free run's shape check and call). One thread: the caller's.
    """

    def __init__(self, library: str | os.PathLike[str]) -> None:
        self.library = Path(library)
        if not self.library.is_file():
            raise InputError(f"{self.library}: compiled tree library not found")
        try:
            lib = ctypes.CDLL(str(self.library.resolve()))
            lib.nudgeml_trees_n_features.restype = ctypes.c_int64
            lib.nudgeml_trees_n_targets.restype = ctypes.c_int64
            lib.nudgeml_trees_predict.restype = ctypes.c_int
            lib.nudgeml_trees_predict.argtypes = (ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)
        except (OSError, AttributeError) as exc:
            raise InputError(f"{self.library}: not a nudgeml tree library ({exc})") from None
        self._lib = lib
        self.n_features = int(lib.nudgeml_trees_n_features())
        self.n_targets = int(lib.nudgeml_trees_n_targets())

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"{self.library}: expects (n, {self.n_features}) features, got {x.shape}")
        y = np.empty((x.shape[0], self.n_targets), np.float32)
        if self._lib.nudgeml_trees_predict(x.shape[0], x.ctypes.data, y.ctypes.data) != 0:
            raise RuntimeError(f"{self.library}: nudgeml_trees_predict failed for {x.shape[0]} columns")
        return y

    def __call__(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return self.predict(x)
        import torch

        return torch.from_numpy(self.predict(x.detach().cpu().numpy()))

