"""ops/dp.py: the noise has the calibrated std, clipping bounds the global norm exactly, per-sample clipping."""

import numpy as np
import pytest
import torch

from flaretune.ops.dp import (add_gaussian_noise, clip_and_sum_per_sample, clip_by_global_norm, global_l2_norm,
                              secure_rng, secure_torch_generator)


@pytest.mark.parametrize("z, clip", [(1.0, 1.0), (0.7, 2.5)])
def test_noise_std_is_z_times_c_over_1e5_draws(z, clip):
    zeros = {"a": np.zeros((300, 200), np.float32), "b": np.zeros(40000, np.float32)}
    noised = add_gaussian_noise(zeros, z * clip)  # the CSPRNG-seeded generator
    draws = np.concatenate([v.ravel() for v in noised.values()])
    assert draws.size == 100000
    assert abs(draws.std() / (z * clip) - 1) < 0.03
    assert abs(draws.mean()) < 4 * z * clip / np.sqrt(draws.size)


def test_secure_generators_are_seeded_afresh_each_time():
    assert secure_rng().normal() != secure_rng().normal()
    assert float(torch.randn(1, generator=secure_torch_generator())) != float(
        torch.randn(1, generator=secure_torch_generator()))


def test_clipping_bounds_the_global_norm_exactly_and_keeps_the_direction():
    update = {"a": np.full((3, 4), 2.0, np.float32), "b": np.array([3.0, -4.0], np.float32)}
    norm = np.sqrt(12 * 4.0 + 25.0)
    clipped, got = clip_by_global_norm(update, 1.5)
    assert got == pytest.approx(norm, rel=1e-15)
    assert global_l2_norm(clipped) == pytest.approx(1.5, rel=1e-14)
    for name in update:
        np.testing.assert_allclose(clipped[name], update[name] * (1.5 / norm), rtol=1e-15)


def test_a_small_update_is_left_untouched():
    update = {"a": np.array([0.3, -0.4], np.float32)}
    clipped, norm = clip_by_global_norm(update, 1.0)
    assert norm == pytest.approx(0.5, rel=1e-7)
    assert np.array_equal(clipped["a"], update["a"].astype(np.float64))


def test_a_non_finite_update_is_refused():
    with pytest.raises(ValueError, match="NaN or inf in the update"):
        clip_by_global_norm({"a": np.array([1.0, np.nan])}, 1.0)


def test_per_sample_clipping_scales_each_example_over_all_parameters():
    # example 0: norm 5 over both params -> scaled by 2/5; example 1: norm 1 -> unchanged
    g1 = torch.tensor([[3.0, 0.0], [0.6, 0.0]], dtype=torch.float64)
    g2 = torch.tensor([[4.0], [0.8]], dtype=torch.float64)
    (s1, s2), norms = clip_and_sum_per_sample([g1, g2], max_norm=2.0)
    assert torch.allclose(norms, torch.tensor([5.0, 1.0], dtype=torch.float64))
    assert torch.allclose(s1, torch.tensor([3.0 * 0.4 + 0.6, 0.0], dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(s2, torch.tensor([4.0 * 0.4 + 0.8], dtype=torch.float64), rtol=1e-12)
    with pytest.raises(ValueError, match="NaN or inf"):
        clip_and_sum_per_sample([torch.tensor([[float("inf")]])], 1.0)
