"""The training targets: one entry per value of ``models.<name>.target`` in the configuration.

A target is a run history the extract stage reads: the rule named ``rule`` writes it as its outputs
``histhf`` (the states, the model's inputs) and ``guide`` (the tendency to learn), in the LMDZ
conventions of :mod:`nudgeml.conventions`; extract and shard turn it into the column table and the
training store of the target (:func:`columns_path`, :func:`store_path`). Adding a target touches
this file, the configuration schema and the rule that writes its history (``docs/extending.md``;
a unit test checks the schema against this registry).

Iterative training adds targets of its own, ``iter/<chain>/k<k>`` (:func:`iteration_target`): the
corrected nudged runs of :mod:`nudgeml.iterate`, written by the rule ``nudged_iter``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nudgeml.errors import InputError


@dataclass(frozen=True)
class Target:
    name: str
    rule: str  # the rule whose outputs `histhf` and `guide` are the target's history
    description: str
    iterable: bool = False  # iterative training may start from it (its run is iteration 0)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("nudging", rule="nudged", iterable=True,
               description="the nudged run's relaxation tendency (window mean)"),
        Target("replay", rule="replay",
               description="initial-tendency targets: reference minus model physics wind tendency at the nudged states"),
        Target("forecast", rule="forecast",
               description="forecast-error targets: (analysis - forecast) / lead from states spun up onto the analysis"),
    )
}

#: The target of a ``models.<name>`` section that names none.
DEFAULT_TARGET: Final = "nudging"

ITERATION_RULE: Final = "nudged_iter"
_CHAIN: Final = r"[A-Za-z0-9][A-Za-z0-9_-]*"  # a model name (the schema's pattern) or mean-<climatology>
_ITERATION = re.compile(rf"iter/({_CHAIN})/k([0-9]+)")


def target_of(section: Mapping[str, Any]) -> Target:
    """The target a ``models.<name>`` section trains on (the schema has checked the name)."""
    return TARGETS[section.get("target", DEFAULT_TARGET)]


def iteration_target(chain: str, k: int) -> str:
    """The target of iteration ``k >= 1`` of ``chain``: its corrected nudged run."""
    return f"iter/{chain}/k{k}"


def parse_iteration(target: str) -> tuple[str, int] | None:
    """``(chain, k)`` of an iteration target, ``None`` for a registered one."""
    m = _ITERATION.fullmatch(target)
    return (m.group(1), int(m.group(2))) if m else None


def target_pattern() -> str:
    """The regular expression of every target name (the workflow's ``{target}`` wildcard)."""
    return "|".join([*(re.escape(t) for t in TARGETS), rf"iter/{_CHAIN}/k[0-9]+"])


def store_path(outdir: str, target: str) -> str:
    """The training store (shuffled columns, split, statistics) of ``target``."""
    return f"{outdir}/datasets/{target}/dataset.zarr"


def columns_path(outdir: str, target: str) -> str:
    """The column table (sample = column x time) extracted from ``target``'s history."""
    return f"{outdir}/columns/{target}/columns.nc"


#: what a correction may apply, in the order of the model's target blocks (winds first, always)
CORRECTED = ("du", "dv", "dt", "dq")


def check_corrected(names: Sequence[str], where: str) -> tuple[str, ...]:
    """``names`` as the corrected tendencies: du, dv first, then dt and/or dq, in :data:`CORRECTED` order."""
    names = tuple(names)
    allowed = [("du", "dv") + extra for extra in ((), ("dt",), ("dq",), ("dt", "dq"))]
    if names not in allowed:
        raise InputError(f"{where}: corrected tendencies {list(names)} are not du, dv optionally followed by dt and/or dq (in this order)")
    return names
