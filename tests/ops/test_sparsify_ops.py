"""Top-k sparsification with error feedback (flaretune.ops.sparsify), no FLARE."""

import numpy as np
import pytest
import torch

from flaretune.ops.sparsify import densify, topk_sparsify


def test_keeps_the_largest_entries_with_int32_indices_and_original_dtype():
    x = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 1.0, -2.0, 0.05, 0.4])
    payload, meta, residual = topk_sparsify(x, 0.3)
    assert payload["indices"].dtype == torch.int32 and payload["values"].dtype == x.dtype
    assert sorted(payload["indices"].tolist()) == [1, 3, 7]
    y = densify(payload, meta)
    assert torch.equal(y + residual.view_as(x), x)  # sent + kept == input, exactly
    assert torch.count_nonzero(y) == 3


@pytest.mark.parametrize("make", [lambda a: a, lambda a: torch.from_numpy(a).half(), lambda a: torch.from_numpy(a)])
def test_round_trip_keeps_container_dtype_and_shape(make):
    x = make(np.random.default_rng(0).standard_normal((7, 11, 13)).astype(np.float32))
    payload, meta, _ = topk_sparsify(x, 0.1)
    y = densify(payload, meta)
    assert type(y) is type(x) and y.dtype == x.dtype and tuple(y.shape) == tuple(x.shape)
    assert meta["k"] == 101  # ceil(0.1 * 1001)


def test_error_feedback_makes_the_transmitted_sum_track_the_true_sum():
    """Stich et al. 2018: with memory, sum(sent) = sum(true) - residual, and the residual stays bounded."""
    g = torch.Generator().manual_seed(0)
    n, rounds, keep = 4000, 60, 0.05
    drift = torch.randn(n, generator=g) * 0.01  # a consistent update direction, as in training
    true_sum, sent_ef, sent_plain = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    residual, gaps = None, []
    for _ in range(rounds):
        diff = drift + torch.randn(n, generator=g) * 0.01
        true_sum += diff
        payload, meta, residual = topk_sparsify(diff, keep, residual)
        sent_ef += densify(payload, meta)
        p2, m2, _ = topk_sparsify(diff, keep)  # no feedback
        sent_plain += densify(p2, m2)
        gaps.append(float((true_sum - sent_ef).norm() / true_sum.norm()))
    assert torch.allclose(sent_ef + residual, true_sum, atol=1e-5)
    plain_gap = float((true_sum - sent_plain).norm() / true_sum.norm())
    assert gaps[-1] < 0.5 * gaps[len(gaps) // 4]  # relative gap shrinks as rounds accumulate
    assert gaps[-1] < 0.2 and plain_gap > 0.6  # without feedback most of the update never arrives


def test_16bit_values_feed_their_rounding_back():
    x = torch.randn(2000, dtype=torch.float32).to(torch.bfloat16)
    payload, meta, residual = topk_sparsify(x, 0.5)
    assert payload["values"].dtype == torch.bfloat16
    assert torch.allclose(densify(payload, meta).float() + residual.view(x.shape), x.float(), atol=1e-6)


def test_rejects_bad_fraction_and_residual():
    with pytest.raises(ValueError, match="keep_fraction"):
        topk_sparsify(torch.randn(10), 0.0)
    with pytest.raises(ValueError, match="residual"):
        topk_sparsify(torch.randn(10), 0.5, torch.zeros(9))
