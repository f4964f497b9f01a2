"""SecureAggregationFilter on real DXOs with bare FLContexts: a whole round against ServerParty, fail closed."""

import logging

import numpy as np
import pytest
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import FilterKey, FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import UnsafeJobError
from nvflare.apis.workspace import Workspace

from flaretune import keys
from flaretune.errors import ConfigError
from flaretune.filters.dp import GaussianPrivacyFilter
from flaretune.filters.secagg import SecureAggregationFilter
from flaretune.ops import secagg as sa
from flaretune.ops.secagg_protocol import ServerParty

SITES = ["site-1", "site-2", "site-3"]


def context(site, task, job="job-1", workspace=None):
    ctx = FLContext()
    ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=True)
    ctx.set_prop(ReservedKey.RUN_NUM, job, private=False, sticky=True)
    ctx.set_prop(FLContextKey.TASK_NAME, task, private=True, sticky=False)
    if workspace is not None:
        ctx.set_prop(FLContextKey.WORKSPACE_OBJECT, workspace, private=True, sticky=True)
    return ctx


def step(flt, site, task, request, result: DXO, job="job-1", workspace=None):
    """The filter's data half on the task, then its result half on what the executor returned."""
    ctx = context(site, task, job, workspace)
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
                                           ({"keep_metrics": "yes"}, "keep_metrics"),
                                           ({"require_signed_keys": 1}, "require_signed_keys")])
def test_bad_arguments_fail_with_one_line(args, message):
    with pytest.raises(ConfigError, match=message):
        SecureAggregationFilter(**args)


def workspaces(tmp_path, pki, kits=SITES):
    """A FLARE workspace per site; the sites in ``kits`` have a startup kit's identity files."""
    out = {}
    for site in SITES:
        (tmp_path / site / "local").mkdir(parents=True)
        (tmp_path / site / "startup").mkdir()
        if site in kits:
            pki.kit(tmp_path / site / "startup", site)
        out[site] = Workspace(str(tmp_path / site), site)
    return out


def advertise_and_share(flt, job, ws, lie=None):
    """Advertise, then share against a roster the server relays; ``lie`` may edit the roster first."""
    server = ServerParty("r0", SITES, 2, 64)
    adverts = {s: step(flt, s, "secagg_advertise", {"step": "advertise", "sites": SITES, "threshold": 2, "round": "r0"},
                       empty(), job, ws[s]).meta[keys.SECAGG]["keys"] for s in SITES}
    roster = server.collect_keys(adverts)
    if lie:
        roster = lie(roster)
    return adverts, {s: step(flt, s, "secagg_share", {"step": "share", "roster": roster, "round": "r0"}, empty(), job,
                             ws[s]) for s in SITES}


def test_sites_with_a_startup_kit_sign_their_keys_and_check_each_other(tmp_path, throwaway_pki, caplog):
    ws = workspaces(tmp_path, throwaway_pki)
    with caplog.at_level(logging.INFO):
        adverts, shared = advertise_and_share(SecureAggregationFilter(), "job-signed", ws)
    assert all(a["job"] == "job-signed" and a["round"] == "r0" and a["cert"].startswith(b"-----BEGIN CERTIFICATE")
               for a in adverts.values())
    assert all(set(out.meta[keys.SECAGG]["sealed"]) == set(SITES) for out in shared.values())
    for site in SITES:
        assert caplog.text.count(f"{site}: verified the signed keys of site-1, site-2, site-3 for round 'r0'") == 1
        assert caplog.text.count(f"{site}: secure-aggregation keys are signed with") == 1  # once per job


def test_a_substituted_key_stops_the_site_it_was_sent_to_and_it_says_why(tmp_path, throwaway_pki, caplog):
    ws = workspaces(tmp_path, throwaway_pki)
    swapped = sa.public_bytes(sa.new_private_key())

    def lie(roster):
        return {**roster, "site-2": {**roster["site-2"], "c_pk": swapped}}

    with caplog.at_level(logging.INFO), pytest.raises(sa.SecAggError) as refused:
        advertise_and_share(SecureAggregationFilter(), "job-lie", ws, lie)
    message = ("site-1: refusing the secure-aggregation keys of site-2: its signature does not match the relayed "
               "public keys (altered after signing); nothing is masked or sent in round 'r0'")
    assert str(refused.value) == message and caplog.text.count(message) == 1


def test_without_a_kit_keys_go_unsigned_and_the_site_says_so_once(tmp_path, throwaway_pki, caplog):
    ws = workspaces(tmp_path, throwaway_pki, kits=())
    with caplog.at_level(logging.INFO):
        adverts, shared = advertise_and_share(SecureAggregationFilter(), "job-sim", ws)
    assert all(set(a) == {"c_pk", "s_pk"} for a in adverts.values())
    assert all(out.meta[keys.SECAGG]["sealed"] for out in shared.values())
    line = ("site-1: secure-aggregation keys are NOT signed or checked (no FLARE certificate at "
            f"{tmp_path / 'site-1' / 'startup' / 'client.crt'}): a server that substitutes keys goes unnoticed")
    assert caplog.text.count(line) == 1 and "verified the signed keys" not in caplog.text


def test_required_signed_keys_without_a_kit_fail_closed(tmp_path, throwaway_pki, caplog):
    ws, startup = workspaces(tmp_path, throwaway_pki, kits=()), tmp_path / "site-1" / "startup"
    request = {"step": "advertise", "sites": SITES, "threshold": 2, "round": "r0"}
    with pytest.raises(sa.SecAggError) as refused:
        step(SecureAggregationFilter(require_signed_keys=True), "site-1", "secagg_advertise", request, empty(),
             "job-strict", ws["site-1"])
    message = (f"site-1: cannot sign and check secure-aggregation keys: {startup / 'client.key'}, "
               f"{startup / 'client.crt'}, {startup / 'rootCA.pem'} missing (require_signed_keys: true); this site "
               f"takes part in no round")
    assert str(refused.value) == message and caplog.text.count(message) == 1


@pytest.mark.parametrize("first", ["job", "site"])
def test_a_job_filter_with_require_signed_keys_false_cannot_relax_the_sites_policy(tmp_path, throwaway_pki, first):
    ws = workspaces(tmp_path, throwaway_pki)
    job_filter, policy = SecureAggregationFilter(require_signed_keys=False), SecureAggregationFilter(
        require_signed_keys=True)
    order = [job_filter, policy] if first == "job" else [policy, job_filter]
    job = f"job-relax-{first}"
    advertise = {"step": "advertise", "sites": SITES, "threshold": 2, "round": "r0"}
    roster = {s: step(order[0], s, "secagg_advertise", advertise, empty(), job, ws[s]).meta[keys.SECAGG]["keys"]
              for s in SITES}
    roster["site-2"] = {**roster["site-2"], "s_pk": sa.public_bytes(sa.new_private_key())}
    share = {"step": "share", "roster": roster, "round": "r0"}
    with pytest.raises(sa.SecAggError, match="refusing the secure-aggregation keys of site-2: its signature"):
        step(order[1], "site-1", "secagg_share", share, empty(), job, ws["site-1"])
