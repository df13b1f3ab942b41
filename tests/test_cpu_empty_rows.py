"""Rows of no elements (a size-0 non-batch dim) on the CPU kernels: no crash,
norm 0. (The reference cannot flatten such rows, so the expectation is written out.)"""

import pytest
import torch

from fastgp._ext import state

pytestmark = pytest.mark.skipif(not state.loaded, reason=f"the C++ extension is not loaded: {state.reason}")


def test_empty_rows_cpu():
    real, fake, g = torch.empty(6, 0, 4), torch.empty(6, 0, 4), torch.empty(6, 0, 4)
    assert torch.ops.fastgp.interpolate(real, fake, torch.rand(6)).shape == (6, 0, 4)
    pen, norms = torch.ops.fastgp.penalty_forward([g], None, 3.0, 1.0, 2.0, False, 0)
    assert torch.equal(norms, torch.zeros(6)) and torch.equal(pen, torch.full((6,), 3.0))
    (d,) = torch.ops.fastgp.penalty_backward(torch.ones(6), [g], norms, None, 3.0, 1.0, 2.0, False, 0)
    assert d.shape == g.shape
