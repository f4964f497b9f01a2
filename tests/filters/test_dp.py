"""GaussianPrivacyFilter on real DXOs with a bare FLContext: exact clip+noise, the received-model record, fail closed."""

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import FilterKey, FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.task_utils import apply_filters

from flaretune import keys
from flaretune.errors import ConfigError
from flaretune.filters import DP_META_KEY, DequantizeFilter, GaussianPrivacyFilter, QuantizeFilter
from flaretune.ops.dp import clip_by_global_norm

Z, C = 0.5, 1.0


def context(direction=FilterKey.OUT, ctx=None):
    ctx = ctx or FLContext()
    ctx.set_prop(FLContextKey.FILTER_DIRECTION, direction, private=True, sticky=False)
    return ctx


def seeded(seed=7, z=Z, clip=C, **kwargs):
    f = GaussianPrivacyFilter(noise_multiplier=z, clip_norm=clip, **kwargs)
    f._rng = np.random.default_rng(seed)
    return f


def model(seed=0, scale=0.02):
    rng = np.random.default_rng(seed)
    return {"lora_A.weight": (rng.standard_normal((8, 32)) * scale).astype(np.float32),
            "lora_B.weight": (rng.standard_normal((32, 8)) * scale).astype(np.float32),
            "classifier.bias": (rng.standard_normal(5) * scale).astype(np.float32)}


def expected_noised(update, seed=7, z=Z, clip=C):
    """clip then noise, computed here with the same generator the filter was given."""
    clipped, _ = clip_by_global_norm(update, clip)
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0.0, z * clip, size=v.shape) for k, v in clipped.items()}


def test_weight_diff_is_clipped_and_noised_exactly():
    diff = model(1, scale=1.0)  # norm ~ 28: clipped
    dxo = DXO(DataKind.WEIGHT_DIFF, dict(diff), meta={MetaKey.NUM_STEPS_CURRENT_ROUND: 3,
                                                      MetaKey.INITIAL_METRICS: {"local_f1": 0.9}})
    out = from_shareable(seeded().process(dxo.to_shareable(), context()))
    want = expected_noised({k: v.astype(np.float64) for k, v in diff.items()})
    assert out.data_kind == DataKind.WEIGHT_DIFF and set(out.data) == set(diff)
    for name, value in out.data.items():
        assert value.dtype == np.float32 and value.shape == diff[name].shape
        np.testing.assert_array_equal(value, want[name].astype(np.float32))
    assert out.meta[DP_META_KEY] == {"version": 1, "mechanism": "gaussian", "noise_multiplier": Z, "clip_norm": C}
    assert out.meta[MetaKey.NUM_STEPS_CURRENT_ROUND] == 3
    assert MetaKey.INITIAL_METRICS not in out.meta  # scores on the site's data are not covered by the noise


def test_weights_are_measured_against_the_received_global_model():
    global_model, ctx = model(0), FLContext()
    task = DXO(DataKind.WEIGHTS, dict(global_model)).to_shareable()
    seeded().process(task, context(FilterKey.IN, ctx))  # the task-data half records the global model
    assert set(ctx.get_prop(keys.DP_RECEIVED_MODEL)) == set(global_model)
    update = {k: v * 0 + 0.01 for k, v in global_model.items()}  # norm 0.01*sqrt(541) < C: not clipped
    local = {k: global_model[k] + update[k] for k in global_model}
    out = from_shareable(seeded().process(DXO(DataKind.WEIGHTS, dict(local)).to_shareable(), context(ctx=ctx)))
    assert out.data_kind == DataKind.WEIGHTS
    measured = {k: local[k].astype(np.float64) - global_model[k] for k in local}
    want = expected_noised(measured)
    for name, value in out.data.items():
        np.testing.assert_array_equal(value, (want[name] + global_model[name]).astype(np.float32))


def test_a_quantized_global_model_is_recorded_as_the_executor_receives_it():
    global_model, ctx = model(0), FLContext()
    sent = QuantizeFilter("blockwise8", min_numel=1).process(DXO(DataKind.WEIGHTS, dict(global_model)).to_shareable(),
                                                               FLContext())
    seeded().process(sent, context(FilterKey.IN, ctx))  # a site filter sees the task before the job's dequantizer
    received = from_shareable(DequantizeFilter().process(sent, FLContext())).data
    for name, value in ctx.get_prop(keys.DP_RECEIVED_MODEL).items():
        np.testing.assert_array_equal(value, received[name].astype(np.float64))
        assert not np.array_equal(value, global_model[name].astype(np.float64))  # quantization did change it


def test_torch_tensors_keep_their_type_and_dtype():
    diff = {"w": torch.ones(4, 4, dtype=torch.bfloat16), "b": torch.zeros(3)}
    out = from_shareable(seeded().process(DXO(DataKind.WEIGHT_DIFF, dict(diff)).to_shareable(), context()))
    assert out.data["w"].dtype == torch.bfloat16 and out.data["b"].dtype == torch.float32
    want = expected_noised({"w": np.ones((4, 4)), "b": np.zeros(3)})
    assert torch.equal(out.data["b"], torch.from_numpy(want["b"]).float())


def test_noise_std_through_the_filter():
    zeros = {"w": np.zeros(100000, np.float32)}
    out = from_shareable(GaussianPrivacyFilter(1.2, 0.5).process(
        DXO(DataKind.WEIGHT_DIFF, zeros).to_shareable(), context()))
    assert abs(out.data["w"].std() / 0.6 - 1) < 0.03


def test_metrics_only_results_pass_untouched():
    metrics = DXO(DataKind.METRICS, {"f1": 0.5})
    assert from_shareable(seeded().process(metrics.to_shareable(), context())).data == {"f1": 0.5}


@pytest.mark.parametrize("data, message", [
    ({"w": np.arange(4)}, "cannot add noise to 'w'"),  # an integer tensor
    ({"w": np.array([1.0, np.nan], np.float32)}, "NaN or inf in the update"),
    ({"w": "secret"}, "cannot add noise to 'w'"),
])
def test_fails_closed_on_data_it_cannot_noise(data, message):
    with pytest.raises(ValueError, match=message):
        seeded().process(DXO(DataKind.WEIGHT_DIFF, data).to_shareable(), context())


def test_fails_closed_without_a_recorded_global_model_and_flare_sends_nothing():
    result = DXO(DataKind.WEIGHTS, model(1)).to_shareable()
    # FLARE's own filter chain (what ClientRunner calls): the exception propagates, and ClientRunner answers
    # the task with make_reply(TASK_RESULT_FILTER_ERROR) instead of the result
    with pytest.raises(ValueError, match="no received global model recorded for this WEIGHTS result"):
        apply_filters("task_result_filters", result, FLContext(), {"train/out": [seeded()]}, "train", FilterKey.OUT)


def test_fails_closed_on_a_mismatching_global_model_or_an_encoded_result():
    ctx = FLContext()
    seeded().process(DXO(DataKind.WEIGHTS, {"other": np.zeros(3, np.float32)}).to_shareable(),
                     context(FilterKey.IN, ctx))
    with pytest.raises(ValueError, match="3 result tensors have no matching received tensor"):
        seeded().process(DXO(DataKind.WEIGHTS, model(1)).to_shareable(), context(ctx=ctx))
    quantized = QuantizeFilter("nf4", min_numel=1).process(DXO(DataKind.WEIGHT_DIFF, model(1)).to_shareable(),
                                                            FLContext())
    with pytest.raises(ValueError, match="already encoded by QuantizeFilter; list GaussianPrivacyFilter before it"):
        seeded().process(quantized, context())
    with pytest.raises(RuntimeError, match="unknown filter direction None"):
        seeded().process(DXO(DataKind.WEIGHT_DIFF, model(1)).to_shareable(), FLContext())


@pytest.mark.parametrize("kwargs, message", [
    ({"noise_multiplier": 0, "clip_norm": 1.0}, "noise_multiplier for GaussianPrivacyFilter must be a finite number > 0"),
    ({"noise_multiplier": 1.0, "clip_norm": -1}, "clip_norm for GaussianPrivacyFilter must be a finite number > 0"),
    ({"noise_multiplier": 1.0, "clip_norm": 1.0, "keep_metrics": "yes"}, "keep_metrics for GaussianPrivacyFilter"),
])
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GaussianPrivacyFilter(**kwargs)


def test_constructor_arguments_are_kept_for_the_exporter():
    f = GaussianPrivacyFilter(noise_multiplier=1.1, clip_norm=0.5, keep_metrics=True)
    assert (f.noise_multiplier, f.clip_norm, f.keep_metrics) == (1.1, 0.5, True)
