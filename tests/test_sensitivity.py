"""The learned sensitivity (nudgeml.sensitivity) on modules whose Jacobian is known."""

import numpy as np
import pytest
import torch

from nudgeml.errors import InputError
from nudgeml.sensitivity import diagonal_sensitivity, format_sensitivity

FEATURES = [{"name": "u", "levels": 3}, {"name": "v", "levels": 3}, {"name": "ps", "levels": 1}]
TARGETS = [{"name": "du", "levels": 3}, {"name": "dv", "levels": 3}]


def test_a_linear_module_gives_its_weights_diagonal_per_block():
    torch.manual_seed(0)
    lin = torch.nn.Linear(7, 6).eval()
    module = torch.jit.script(lin)  # the exported form
    x = np.random.default_rng(0).normal(size=(1000, 7)).astype(np.float32)
    got = diagonal_sensitivity(module, x, FEATURES, TARGETS, rows_per_batch=300)
    w = lin.weight.detach().numpy()
    np.testing.assert_allclose(got["du"], [w[k, k] for k in range(3)], rtol=1e-6)
    np.testing.assert_allclose(got["dv"], [w[3 + k, 3 + k] for k in range(3)], rtol=1e-6)


class Drag(torch.nn.Module):
    """du_k = -c_k u_k^2, dv = 0 * v: the sensitivity is -2 c_k u_k, averaged over the rows."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-self.c * x[:, :3] ** 2, 0.0 * x[:, 3:6]], dim=1)


def test_a_state_dependent_drag_is_averaged_over_the_columns():
    c = torch.tensor([1.0, 2.0, 3.0])
    x = np.random.default_rng(1).normal(loc=1.5, size=(512, 7)).astype(np.float32)
    got = diagonal_sensitivity(Drag(c), x, FEATURES, TARGETS, rows_per_batch=100)
    np.testing.assert_allclose(got["du"], -2 * c.numpy() * x[:, :3].astype(np.float64).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(got["dv"], 0.0, atol=0)
    assert all(got["du"] < 0)  # a drag on the model's own wind


def test_targets_without_their_input_are_refused_naming_both():
    with pytest.raises(InputError, match=r"dt.*'u', 'v', 'ps'"):
        diagonal_sensitivity(torch.nn.Identity(), np.zeros((2, 7), np.float32), FEATURES, [{"name": "dt", "levels": 3}])


def test_the_table_prints_every_level_and_the_mean():
    result = {"model": "m", "split": "test", "rows": 2, "levels_hpa": [900.0, 500.0], "per_day": {"du": [-0.5, 0.25], "dv": [0.0, 0.1]}}
    text = format_sensitivity(result)
    assert "du on u" in text and "dv on v" in text
    assert text.splitlines()[-1].split() == ["mean", "-0.125", "0.050"]
