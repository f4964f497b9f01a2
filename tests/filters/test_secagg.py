"""SecureAggregationFilter on real DXOs with bare FLContexts: a whole round against ServerParty, fail closed."""

import numpy as np
import pytest
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import FilterKey, FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import UnsafeJobError

from flaretune import keys
from flaretune.errors import ConfigError
from flaretune.filters.dp import GaussianPrivacyFilter
from flaretune.filters.secagg import SecureAggregationFilter
from flaretune.ops import secagg as sa
from flaretune.ops.secagg_protocol import ServerParty

SITES = ["site-1", "site-2", "site-3"]


def context(site, task, job="job-1"):
    ctx = FLContext()
    ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=True)
    ctx.set_prop(ReservedKey.RUN_NUM, job, private=False, sticky=True)
    ctx.set_prop(FLContextKey.TASK_NAME, task, private=True, sticky=False)
    return ctx


def step(flt, site, task, request, result: DXO, job="job-1"):
    """The filter's data half on the task, then its result half on what the executor returned."""
    ctx = context(site, task, job)
    ctx.set_prop(FLContextKey.FILTER_DIRECTION, FilterKey.IN, private=True, sticky=False)
    flt.process(DXO(DataKind.METRICS, {}, meta={keys.SECAGG: request}).to_shareable(), ctx)
    ctx.set_prop(FLContextKey.FILTER_DIRECTION, FilterKey.OUT, private=True, sticky=False)
    return from_shareable(flt.process(result.to_shareable(), ctx))


def empty():
    return DXO(DataKind.METRICS, {}, meta={keys.SECAGG: {"pending": "x"}})


def update(seed, n):
    rng = np.random.default_rng(seed)
    params = {"a.lora_A.weight": rng.normal(size=(4, 8)).astype(np.float32),
              "a.lora_B.weight": rng.normal(size=8).astype(np.float32)}
    meta = {keys.NUM_EXAMPLES: n, MetaKey.INITIAL_METRICS: {"f1": 0.5}}
    return params, DXO(DataKind.WEIGHTS, dict(params), meta=meta)


@pytest.mark.parametrize("bits, f", [(64, 32), (24, 12)])
def test_a_round_through_the_filter_gives_the_weighted_mean_and_hides_the_count(bits, f):
    flt, job = SecureAggregationFilter(), f"job-{bits}"
    server = ServerParty("r0", SITES, 2, bits)
    def ask(task, req):
        return {s: step(flt, s, task, {**req, "round": "r0"}, empty(), job).meta[keys.SECAGG] for s in SITES}

    roster = server.collect_keys({s: a["keys"] for s, a in ask("secagg_advertise", {"step": "advertise", "sites": SITES,
                                                                                     "threshold": 2}).items()})
    shares = ask("secagg_share", {"step": "share", "roster": roster})
    u1 = server.route_shares({s: a["sealed"] for s, a in shares.items()})
    train = {"round": "r0", "step": "train", "u1": u1, "fraction_bits": f, "modulus_bits": bits}
    truth = {}
    for i, site in enumerate(SITES):
        params, dxo = update(i, 10 * (i + 1))
        truth[site] = (params, 10 * (i + 1))
        out = step(flt, site, "train", train, dxo, job)
        assert keys.NUM_EXAMPLES not in out.meta and MetaKey.INITIAL_METRICS not in out.meta
        sent = out.data["a.lora_A.weight"]
        assert (sent.dtype, sent.shape) == ((np.uint64, (4, 8)) if bits == 64 else (np.uint8, (96,)))
        layout = out.meta[keys.SECAGG]["layout"]
        vector = [out.data[n].ravel() for n, _ in layout] + [out.data[keys.SECAGG_WEIGHT]]
        server.add_masked(site, sa.from_wire(np.concatenate(vector), bits))
    replies = {}
    for s in SITES:
        request = {"round": "r0", "step": "unmask", "u2": server.u2, "inbox": {s: server.inbox(s)}}
        replies[s] = step(flt, s, "secagg_unmask", request, empty(), job).meta[keys.SECAGG]["shares"]
    total = sa.decode(server.unmask(replies), f, bits)
    assert total[-1] == 60
    mean = sa.unflatten(total[:-1] / total[-1], layout)
    for name in mean:
        want = sum(p[name].astype(np.float64) * n for p, n in truth.values()) / 60
        np.testing.assert_allclose(mean[name], want, rtol=0, atol=1e-9 if bits == 64 else 2.0 ** -13)


def test_an_unmasked_model_result_never_leaves():
    _, dxo = update(0, 5)
    with pytest.raises(UnsafeJobError, match="sends model updates only under secure aggregation"):
        step(SecureAggregationFilter(), "site-1", "submit_model", None, dxo)


def test_metrics_pass_and_a_second_filter_instance_passes_a_masked_result_through():
    metrics = DXO(DataKind.METRICS, {"f1": 0.7})
    assert step(SecureAggregationFilter(), "site-1", "validate", None, metrics).data == {"f1": 0.7}
    done = DXO(DataKind.WEIGHTS, {"x": np.zeros(3, dtype=np.uint64)}, meta={keys.SECAGG: {"answered": True}})
    assert step(SecureAggregationFilter(), "site-1", "train", None, done).data["x"].dtype == np.uint64


def test_a_train_step_out_of_order_fails_and_sends_nothing():
    _, dxo = update(0, 5)
    request = {"round": "never-advertised", "step": "train", "u1": SITES, "fraction_bits": 32, "modulus_bits": 64}
    with pytest.raises(sa.SecAggError, match="unknown here"):
        step(SecureAggregationFilter(), "site-1", "train", request, dxo, job="job-b")


def test_dp_noise_then_masking_fails_closed_in_the_wrong_order():
    masked = DXO(DataKind.WEIGHT_DIFF, {"x": np.zeros(3, dtype=np.uint64)}, meta={keys.SECAGG: {"answered": True}})
    ctx = context("site-1", "train")
    ctx.set_prop(FLContextKey.FILTER_DIRECTION, FilterKey.OUT, private=True, sticky=False)
    with pytest.raises(ValueError, match="cannot add noise"):  # DP listed after masking: refuses the integers
        GaussianPrivacyFilter(noise_multiplier=1.0, clip_norm=1.0).process(masked.to_shareable(), ctx)


@pytest.mark.parametrize("args, message", [({"max_num_examples": 0}, "max_num_examples"),
                                           ({"keep_metrics": "yes"}, "keep_metrics")])
def test_bad_arguments_fail_with_one_line(args, message):
    with pytest.raises(ConfigError, match=message):
        SecureAggregationFilter(**args)
