"""Secure aggregation on FLARE: the server sees only the example-weighted sum of the sites' updates.

Pairwise additive masking with dropout recovery (Bonawitz et al., 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS, eprint 2017/281); the protocol is
:mod:`flaretune.ops.secagg_protocol`, the site's half :class:`flaretune.filters.secagg.SecureAggregationFilter`.

:class:`SecAggController` is :class:`~flaretune.aggregation.controller.FedAggController` with one round of
``train`` replaced by four broadcasts: ``secagg_advertise`` (public keys), ``secagg_share`` (sealed Shamir
shares, relayed), ``train`` (masked updates) and ``secagg_unmask`` (the shares that remove the masks).
Every other part of the loop (strategy, checkpoint, history, final validation) is the shared one: the
:class:`SecAggStore` unmasks the round's sum, divides it by the summed weight and hands that mean to the
job's strategy (``fedavg`` gives FedAvg exactly; FedOpt strategies step from it).

* Weights: each site sends ``n·x`` and ``n`` masked; the server decodes ``Σ n·x`` and ``Σ n`` only.
* Threshold ``t`` (default a strict majority of the round's sites): the round needs ``t`` masked updates
  and ``t`` unmasking answers, so it survives ``n - t`` dropouts and no sum of fewer than ``t`` sites is
  ever revealed. A site lost after the key sharing leaves the exact sum of the others.
* Validation: the server checks only the sum (names, shapes, finite values, a positive total weight no
  larger than ``max_num_examples`` per site); per-site checks (example-count cap, fixed-point range) run at
  each site, and the round-median norm check cannot run at all.
"""

import secrets
import time
from contextlib import contextmanager
from typing import Dict, List, Optional

import numpy as np
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from flaretune import keys
from flaretune.aggregation.controller import FedAggController, _client_name
from flaretune.aggregation.rounds import MemoryStore, SiteResult
from flaretune.aggregation.validation import check_params
from flaretune.errors import ConfigError
from flaretune.ops import secagg as sa
from flaretune.ops.secagg_protocol import ServerParty, check_threshold, default_threshold

FILTER_PATH = "flaretune.filters.secagg.SecureAggregationFilter"
EXECUTOR_PATH = "flaretune.executors.secagg.SecAggProtocolExecutor"
CONTROLLER_PATH = "flaretune.aggregation.secagg.SecAggController"
PROTOCOL_TASKS = [keys.SECAGG_ADVERTISE_TASK, keys.SECAGG_SHARE_TASK, keys.SECAGG_UNMASK_TASK]
TASK_REQUEST_INTERVAL = 0.5  # seconds; see enable_secure_aggregation
_MISSING_FILTER = (f"put {FILTER_PATH} in the task data and result filters of the tasks "
                   f"{', '.join(PROTOCOL_TASKS)} and train (flaretune.aggregation.secagg.enable_secure_aggregation)")


class SecAggController(FedAggController):
    """FedAggController whose sites send masked updates (see the module docstring).

    Args (besides FedAggController's):
        threshold: Shamir threshold t in [2, sites]; 0 picks ``sites // 2 + 1``.
        fraction_bits / modulus_bits: fixed point ``round(v · 2^f) mod 2^k``, k 24, 32 or 64; a site refuses a
            value that could overflow (``|n·x| >= 2^(k-1-f) / sites``) instead of clipping it.
        dropout_wait: seconds each step waits for the remaining sites once ``t`` have answered.
    """

    # *args as well as **kwargs: FLARE's job exporter looks for FedAggController's arguments only then
    # (nvflare.fuel.utils.class_utils._retrieve_parameters), and would drop num_rounds & co. otherwise
    def __init__(self, threshold: int = 0, fraction_bits: int = 32, modulus_bits: int = 64,
                 dropout_wait: int = 30, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = threshold
        self.fraction_bits = fraction_bits
        self.modulus_bits = modulus_bits
        self.dropout_wait = dropout_wait
        try:
            sa.check_encoding(fraction_bits, modulus_bits)
        except sa.SecAggError as err:
            raise ConfigError(str(err)) from None
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0 or threshold == 1:
            raise ConfigError(f"threshold must be 0 (a majority) or an int >= 2, got {threshold!r}")
        if isinstance(dropout_wait, bool) or not isinstance(dropout_wait, int) or dropout_wait < 0:
            raise ConfigError(f"dropout_wait must be an int >= 0 (seconds), got {dropout_wait!r}")
        self._ignore_result_error = True  # a site that fails a step is a dropout; the protocol decides
        self._store = SecAggStore(self)
        self._party: Optional[ServerParty] = None
        self._layout: list = []
        self._params_type = ParamsType.FULL
        self._round_info: dict = {}
        self._bytes: dict = {"down_per_site": 0, "up": {}}
        self._seconds: Dict[str, float] = {}  # wall time of each broadcast of the round

    # -- one round: keys, shares, masked training ---------------------------------------------------
    def train(self, round_number, sites, global_model, meta) -> Dict[str, SiteResult]:
        with _round_errors(round_number, self.num_rounds):
            return self._masked_training(round_number, sites, global_model, meta)

    def _masked_training(self, round_number, sites, global_model, meta) -> Dict[str, SiteResult]:
        t = self.threshold or default_threshold(len(sites))
        check_threshold(t, len(sites))
        rid = f"{round_number}/{secrets.token_hex(8)}"
        party = self._party = ServerParty(rid, sites, t, self.modulus_bits)
        self._bytes, self._seconds = {"down_per_site": 0, "up": {}}, {}
        answers = self._ask(keys.SECAGG_ADVERTISE_TASK, {"step": "advertise", "sites": party.sites, "threshold": t},
                            party.sites, "keys")
        roster = party.collect_keys({site: a["keys"] for site, a in answers.items()})
        answers = self._ask(keys.SECAGG_SHARE_TASK, {"step": "share", "roster": roster}, list(roster), "sealed")
        u1 = party.route_shares({site: a["sealed"] for site, a in answers.items()})
        request = {"round": rid, "step": "train", "u1": u1, "fraction_bits": self.fraction_bits,
                   "modulus_bits": self.modulus_bits}
        task_model = FLModel(
            params_type=ParamsType.FULL, params=global_model, current_round=round_number,
            total_rounds=self.num_rounds,
            meta={**self._base_meta, keys.FEDPROX_MU: self.fedprox_mu, **meta, keys.SECAGG: request},
        )
        replies = self._broadcast(self.train_task_name, task_model, u1, t)
        results, layouts = {}, {}
        for reply in replies:
            site, info = _client_name(reply), (reply.meta or {}).get(keys.SECAGG) or {}
            params = reply.params or {}
            if info.get("round") != rid or not info.get("masked") or keys.SECAGG_WEIGHT not in params:
                self.warning(f"round {round_number + 1}/{self.num_rounds}: {site} sent no masked update; "
                             f"left out. {_MISSING_FILTER}")
                continue
            layout = [(name, list(shape)) for name, shape in info["layout"]]
            vector = sa.from_wire(np.concatenate([np.asarray(params[name]).ravel() for name, _ in layout]
                                                 + [np.asarray(params[keys.SECAGG_WEIGHT]).ravel()]),
                                  self.modulus_bits)
            party.add_masked(site, vector)
            layouts[site] = layout
            self._params_type = reply.params_type
            results[site] = SiteResult(None, None, reply.metrics or {}, (reply.meta or {}).get(keys.UPLOAD_BYTES))
        if len({repr(v) for v in layouts.values()}) > 1:
            raise sa.SecAggError("the sites' masked updates have different layouts")
        self._layout = next(iter(layouts.values()), [])
        return results

    def unmask(self, round_number: int) -> tuple:
        """``(Σ n·x as float64 tensors, Σ n, sites in the sum)`` from the masked updates of this round."""
        party = self._party
        u2 = party.check_inputs()
        inbox = {site: party.inbox(site) for site in u2}  # every site's sealed shares, to every site
        answers = self._ask(keys.SECAGG_UNMASK_TASK, {"step": "unmask", "u2": u2, "inbox": inbox}, u2, "shares")
        total = sa.decode(party.unmask({site: a["shares"] for site, a in answers.items()}),
                          self.fraction_bits, self.modulus_bits)
        self._round_info = {"secure_aggregation": {
            "threshold": party.threshold, "sites": party.sites, "u1": party.u1, "u2": u2,
            "unmasked_by": sorted(answers), "total_weight": float(total[-1]),
            "modulus_bits": self.modulus_bits, "fraction_bits": self.fraction_bits,
            # key, share and unmask messages (payload bytes, FLARE framing excluded), not the masked tensors
            "protocol_bytes_down_per_site": self._bytes["down_per_site"],
            "protocol_bytes_up": dict(sorted(self._bytes["up"].items())), "step_seconds": dict(self._seconds)}}
        return sa.unflatten(total[:-1], self._layout), float(total[-1]), u2

    def round_info(self) -> dict:
        return dict(self._round_info)

    # -- messaging ------------------------------------------------------------------------------------
    def _broadcast(self, task_name: str, data: FLModel, targets: List[str], t: int) -> List[FLModel]:
        started = time.time()
        replies = self.broadcast_model(task_name=task_name, data=data, targets=targets, min_responses=t,
                                       timeout=self.train_timeout, wait_time_after_min_received=self.dropout_wait)
        self._seconds[task_name] = round(time.time() - started, 3)
        return replies

    def _ask(self, task_name: str, request: dict, targets: List[str], field: str) -> Dict[str, dict]:
        """Each site's answer to one protocol step (``field`` must be in it); sites that failed are dropouts."""
        party = self._party
        request = {**request, "round": party.round_id}
        replies = self._broadcast(task_name, FLModel(metrics={}, meta={keys.SECAGG: request}), targets, party.threshold)
        self._bytes["down_per_site"] += payload_bytes(request)
        answers = {}
        for reply in replies:
            site, answer = _client_name(reply), (reply.meta or {}).get(keys.SECAGG)
            self._bytes["up"][site] = self._bytes["up"].get(site, 0) + payload_bytes(answer)
            if isinstance(answer, dict) and answer.get("round") == party.round_id and field in answer:
                answers[site] = answer
            elif isinstance(answer, dict) and "pending" in answer:
                raise sa.SecAggError(f"{site} answered {task_name} without its filter: {_MISSING_FILTER}")
        return answers


class SecAggStore(MemoryStore):
    """The round's update lives under masks: unmask the sum through the controller, then one strategy step."""

    def __init__(self, controller: SecAggController):
        self.controller = controller

    def aggregate(self, strategy, global_model, results, round_number):
        with _round_errors(round_number, self.controller.num_rounds):
            return self._aggregate(strategy, global_model, round_number)

    def _aggregate(self, strategy, global_model, round_number):
        weighted_sum, weight, sites = self.controller.unmask(round_number)
        cap = strategy.policy.max_num_examples * len(sites)
        if not 0 < weight <= cap:
            raise sa.SecAggError(f"the summed example count {weight:g} is not in "
                                 f"(0, {cap:g}] (max_num_examples per site): refusing the aggregate")
        mean = {name: value / weight for name, value in weighted_sum.items()}
        if self.controller._params_type == ParamsType.DIFF:
            mean = {name: value + np.asarray(global_model[name], dtype=np.float64) if name in global_model else value
                    for name, value in mean.items()}
        typed = {name: value.astype(np.asarray(global_model[name]).dtype) if name in global_model else value
                 for name, value in mean.items()}
        reason = check_params(global_model, typed)
        if reason:
            raise sa.SecAggError(f"the unmasked aggregate is unusable: {reason}")
        (new_model,) = strategy.aggregate_in_parts([(global_model, [(mean, 1.0)])])
        return new_model, sites, {}


def payload_bytes(obj) -> int:
    """Bytes of a message's content: strings and bytes by length, numbers 8, arrays by size."""
    if isinstance(obj, (bytes, str)):
        return len(obj)
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(payload_bytes(k) + payload_bytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 8


@contextmanager
def _round_errors(round_number: int, num_rounds: int):
    """Name the round in a protocol error: ``round 2/3: secure aggregation ...``."""
    try:
        yield
    except sa.SecAggError as err:
        raise sa.SecAggError(f"round {round_number + 1}/{num_rounds}: {err}") from None


def enable_secure_aggregation(job, tasks: Optional[List[str]] = None, threshold: Optional[int] = None,
                              modulus_bits: int = 64, fraction_bits: int = 32) -> dict:
    """Edit a :class:`flaretune.jobcfg.JobFolder` in place to run its training workflow under secure aggregation.

    The workflow becomes :class:`SecAggController` (its arguments kept), the sites get
    :class:`~flaretune.executors.secagg.SecAggProtocolExecutor` for the protocol tasks and
    ``SecureAggregationFilter`` last in the data and result chains of ``train`` and the protocol tasks; the
    result quantization of ``train`` is removed (fixed-point encoding replaces it), task-data quantization
    stays; the server's ``task_request_interval`` becomes 0.5 s unless the job sets one. ``tasks`` are the
    training task names (default ``["train"]``). Returns a description (JSON).
    """
    tasks = list(tasks or ["train"])
    if "*" in tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ConfigError(f"name the training tasks explicitly (FLARE 2.9 never matches '*'), got {tasks!r}")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2):
        raise ConfigError(f"threshold must be an int >= 2 or None (a majority), got {threshold!r}")
    try:
        sa.check_encoding(fraction_bits, modulus_bits)
    except sa.SecAggError as err:
        raise ConfigError(str(err)) from None
    workflow = job.workflow()
    # each protocol step waits for the sites' next task poll: FLARE tells an idle site to come back after
    # the server's task_request_interval (2 s by default), so three extra steps would add ~6 s a round
    job.server.setdefault("server", {}).setdefault("task_request_interval", TASK_REQUEST_INTERVAL)
    workflow["path"] = CONTROLLER_PATH
    workflow.setdefault("args", {}).update({"threshold": threshold or 0, "fraction_bits": fraction_bits,
                                            "modulus_bits": modulus_bits})
    executors = [e for e in job.client.get("executors", []) if e["executor"].get("path") != EXECUTOR_PATH]
    executors.append({"tasks": list(PROTOCOL_TASKS), "executor": {"path": EXECUTOR_PATH, "args": {}}})
    job.client["executors"] = executors
    quantized = _drop_result_quantization(job, tasks)
    flt = {"path": FILTER_PATH, "args": {}}
    for chain in ("task_data_filters", "task_result_filters"):
        _append_filter(job.client, chain, tasks + PROTOCOL_TASKS, flt)
    return {"secure_aggregation": True, "protocol": "pairwise masking + Shamir dropout recovery (Bonawitz et al. 2017)",
            "threshold": threshold or "majority", "modulus_bits": modulus_bits, "fraction_bits": fraction_bits,
            "tasks": tasks, "protocol_tasks": list(PROTOCOL_TASKS), "result_quantization_removed": quantized,
            "task_request_interval": job.server["server"]["task_request_interval"]}


def _entries_for(config: dict, chain: str, task: str) -> List[dict]:
    return [e for e in config.get(chain, []) if task in e.get("tasks", [])]


def _append_filter(config: dict, chain: str, tasks: List[str], flt: dict) -> None:
    """Put ``flt`` last in the chain of each task (FLARE takes one chain entry per task: split shared ones)."""
    entries = config.setdefault(chain, [])
    for task in tasks:
        own = _entries_for(config, chain, task)
        filters = [f for e in own for f in e.get("filters", []) if f.get("path") != FILTER_PATH]
        for e in own:
            e["tasks"] = [t for t in e["tasks"] if t != task]
        entries.append({"tasks": [task], "filters": filters + [dict(flt)]})
    config[chain] = [e for e in entries if e.get("tasks")]


def _drop_result_quantization(job, tasks: List[str]) -> Optional[str]:
    from flaretune.jobcfg import DEQUANTIZE_FILTER, QUANTIZE_FILTER

    dropped = None
    for config, chain, path in ((job.client, "task_result_filters", QUANTIZE_FILTER),
                                (job.server, "task_result_filters", DEQUANTIZE_FILTER)):
        for task in tasks:
            for entry in _entries_for(config, chain, task):
                kept = [f for f in entry["filters"] if f.get("path") != path]
                if len(kept) != len(entry["filters"]):
                    dropped = dropped or next(f for f in entry["filters"] if f.get("path") == path).get(
                        "args", {}).get("quantization_type", "removed")
                    entry["tasks"] = [t for t in entry["tasks"] if t != task]
                    config[chain].append({"tasks": [task], "filters": kept})
        config[chain] = [e for e in config.get(chain, []) if e.get("tasks") and e.get("filters")]
    return dropped
