"""The module every exported model is: a network between the input standardisation and the
output de-standardisation, in physical units on both sides (``docs/model-format.md``).

Kept free of ``from __future__ import annotations``: TorchScript reads the ``Final`` annotation of
:class:`NormalizedModel` as a live type.
"""

from collections.abc import Sequence
from typing import Final

import torch
from torch import nn


class NormalizedModel(nn.Module):
    """``net`` between the feature standardisation and the target de-standardisation.

    ``forward(x) = net((clip(x) - x_mean) / x_std) * y_std + y_mean`` with ``x`` in physical units
    ``(n, n_features)`` and the result in physical units ``(n, n_targets)``. A zero or non-finite
    standard deviation (a constant feature) is replaced by 1 so the module never divides by zero.
    ``x_clip`` (``(lo, hi)`` tensors of ``n_features``) clamps raw inputs before normalising;
    without it no clamp is traced into the graph.
    """

    clip_inputs: Final[bool]

    def __init__(
        self,
        net: nn.Module,
        x_mean: torch.Tensor,
        x_std: torch.Tensor,
        y_mean: torch.Tensor,
        y_std: torch.Tensor,
        x_clip: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        f32 = torch.float32
        x_std = torch.as_tensor(x_std, dtype=f32)
        y_std = torch.as_tensor(y_std, dtype=f32)
        x_std = torch.where(torch.isfinite(x_std) & (x_std > 0), x_std, torch.ones_like(x_std))
        y_std = torch.where(torch.isfinite(y_std) & (y_std > 0), y_std, torch.ones_like(y_std))
        self.register_buffer("x_mean", torch.as_tensor(x_mean, dtype=f32).clone())
        self.register_buffer("x_std", x_std.clone())
        self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=f32).clone())
        self.register_buffer("y_std", y_std.clone())
        self.clip_inputs = x_clip is not None
        lo, hi = x_clip if x_clip is not None else (self.x_mean, self.x_mean)
        self.register_buffer("x_lo", torch.as_tensor(lo, dtype=f32).clone())
        self.register_buffer("x_hi", torch.as_tensor(hi, dtype=f32).clone())
        for name in ("x_mean", "x_std", "x_lo", "x_hi"):
            if getattr(self, name).shape != self.x_mean.shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"x_mean {tuple(self.x_mean.shape)}")
        if self.y_std.shape != self.y_mean.shape:
            raise ValueError(f"y_std has shape {tuple(self.y_std.shape)}, y_mean {tuple(self.y_mean.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip_inputs:
            x = torch.maximum(torch.minimum(x, self.x_hi), self.x_lo)
        z = (x - self.x_mean) / self.x_std
        return self.net(z) * self.y_std + self.y_mean


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """A plain multilayer perceptron ``n_in → hidden… → n_out`` (used by fixtures and benchmarks)."""
    layers: list[nn.Module] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h), activation()]
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


class ReducedPrecisionModel(nn.Module):
    """A :class:`NormalizedModel` whose network computes in ``dtype`` (bfloat16), for the ``.pt2``.

    The clip and the standardisation stay in float32 (a raw feature such as ``ps`` ~1e5 Pa has 8 bits
    of mantissa in bfloat16, 512 Pa steps, far coarser than its spread), the standardised features are
    cast to ``dtype`` for the hidden layers (whose matrix products accumulate in float32 on CPUs with
    native bfloat16 dot products), and the output is cast back to float32 before the de-standardisation:
    inputs and outputs keep the float32 interface of every exported model.
    """

    clip_inputs: Final[bool]

    def __init__(self, model: NormalizedModel, dtype: torch.dtype) -> None:
        super().__init__()
        import copy

        if not isinstance(model, NormalizedModel):
            raise TypeError(f"reduced precision applies to a NormalizedModel, got {type(model).__name__}")
        self.net = copy.deepcopy(model.net).to(dtype)
        for name in ("x_mean", "x_std", "y_mean", "y_std", "x_lo", "x_hi"):
            self.register_buffer(name, getattr(model, name).detach().clone())
        self.clip_inputs = model.clip_inputs
        self.compute_dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip_inputs:
            x = torch.maximum(torch.minimum(x, self.x_hi), self.x_lo)
        z = ((x - self.x_mean) / self.x_std).to(self.compute_dtype)
        return self.net(z).to(torch.float32) * self.y_std + self.y_mean
