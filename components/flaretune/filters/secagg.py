"""The site's half of secure aggregation: a FLARE filter that holds the site's secrets and masks its update.

:class:`SecureAggregationFilter` is the only place a site's secure-aggregation keys, self-mask seed and
Shamir shares live (a :class:`~flaretune.ops.secagg_protocol.ClientParty` per job and site). It goes in
both ``task_data_filters`` and ``task_result_filters`` of the training task and of the three protocol
tasks (``secagg_advertise``, ``secagg_share``, ``secagg_unmask``), or once in a site's ``privacy.json``
scope, where FLARE applies it to every task of every job:

* task data (in): it records the server's request (``meta["flaretune_secagg"]``) in the task's FLContext;
* protocol task results (out): :class:`~flaretune.executors.secagg.SecAggProtocolExecutor` answers with
  an empty result, and the filter replaces it with the site's answer to the recorded request;
* ``train`` results (out): the WEIGHTS / WEIGHT_DIFF update ``x`` and its example count ``n`` become
  ``encode(n·x) ++ [encode(n)]`` in Z_{2^k}, masked; the tensors keep their names and shapes (as uint32 or
  uint64; 24-bit words as 3 bytes each, flat uint8), the example count travels masked as
  ``flaretune_secagg.weight``. The plain ``num_examples``
  and the training metrics are removed from the result: the server learns only the weighted sum.

It fails closed. A model result it cannot mask — a task that carries no secure-aggregation round (the job
runs plain FedAvg, or asks for ``submit_model``), a value out of the fixed-point range, a protocol step
out of order — never leaves: a result with no round raises FLARE's ``UnsafeJobError`` (the site marks the
job unsafe and answers ``UNSAFE_JOB``), a failed step raises and the site drops out of that round.
Metrics-only results (``validate``) pass. Put it after any filter that must see the plain update
(``GaussianPrivacyFilter``, ``AdapterOnlyGuard``): masked tensors are integers nothing else can read.

Signed keys (``require_signed_keys``): a site whose FLARE startup kit holds ``client.crt`` (every POC and
provisioned site) signs its advertised public keys with ``client.key``, bound to its name, the job and the
round, and checks every site's advertisement against its own ``rootCA.pem`` before deriving a pairwise
key; a failed check stops the site's round with one line naming the peer and the reason (nothing is
masked or sent). ``None`` (default): so when the kit has a certificate; without one (the FLARE simulator)
the keys go unsigned and unchecked, and the site says so once per job. ``True``: a site without the three
kit files refuses every round. ``False``: peers' keys are not checked (the site still signs its own). When
a site's ``privacy.json`` and the job both list the filter, the stricter setting holds.

Result meta contract (key ``flaretune_secagg``) on a masked result::

    {"round": id, "layout": [[name, shape], ...], "fraction_bits": f, "modulus_bits": k, "masked": true}
"""

import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FilterKey, FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import UnsafeJobError
from nvflare.apis.shareable import Shareable

from flaretune import keys
from flaretune.aggregation.validation import check_num_examples
from flaretune.errors import ConfigError
from flaretune.ops import secagg as sa
from flaretune.ops.secagg_identity import SiteIdentity, TrustRoot
from flaretune.ops.secagg_protocol import ClientParty

_MODEL_KINDS = (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF)
_STEPS = ("advertise", "share", "unmask", "train")  # the protocol steps a request names
KIT_FILES = ("client.key", "client.crt", "rootCA.pem")  # in the startup kit: FLARE's names for a client's identity
_STRICTNESS = {False: 0, None: 1, True: 2}  # require_signed_keys: the stricter of two filter instances holds
_JSON = {False: "false", None: "null", True: "true"}
_PARTIES: Dict[Tuple[str, str], Tuple[ClientParty, int]] = {}  # (job id, site): one party and its strictness
_LOCK = threading.Lock()


def _startup_dir(fl_ctx: FLContext) -> Optional[Path]:
    workspace = fl_ctx.get_prop(FLContextKey.WORKSPACE_OBJECT)
    if workspace is None and fl_ctx.get_engine() is not None:
        workspace = fl_ctx.get_engine().get_workspace()
    return Path(workspace.get_startup_kit_dir()) if workspace is not None else None


def _configure(party: ClientParty, require: Optional[bool], fl_ctx: FLContext) -> Tuple[bool, str]:
    """Give ``party`` the site's FLARE identity and root CA as ``require`` asks: (keys checked, the line to log)."""
    startup = _startup_dir(fl_ctx)
    key, cert, root = (startup / name for name in KIT_FILES) if startup else (None, None, None)
    has_kit = startup is not None and cert.is_file()
    if require or has_kit:  # true, or a kit with a certificate: the site's identity must be complete
        needed = (key, cert, root) if require is not False else (key, cert)
        missing = [str(p) for p in needed if not p.is_file()] if startup else ["a FLARE startup kit"]
        if missing:
            raise sa.SecAggError(f"{party.name}: cannot sign and check secure-aggregation keys: {', '.join(missing)} "
                                 f"missing (require_signed_keys: {_JSON[require]}); this site takes part in no round")
    identity = SiteIdentity.from_files(party.name, key, cert) if has_kit else None
    trust = TrustRoot.from_file(root) if has_kit and require is not False else None
    party.identity, party.trust = identity, trust
    if trust is not None:
        return True, f"{party.name}: secure-aggregation keys are signed with {cert}; every site's must chain to {root}"
    if identity is not None:
        return False, (f"{party.name}: other sites' secure-aggregation keys are NOT checked (require_signed_keys is "
                       f"false; this site signs its own): a server that substitutes keys goes unnoticed")
    return False, (f"{party.name}: secure-aggregation keys are NOT signed or checked (no FLARE certificate at "
                   f"{cert or 'a startup kit'}): a server that substitutes keys goes unnoticed")


def _party(fl_ctx: FLContext, require: Optional[bool], log) -> ClientParty:
    """The site's party in this job, set up by the strictest ``require_signed_keys`` that asked so far."""
    key = (str(fl_ctx.get_job_id()), fl_ctx.get_identity_name())
    with _LOCK:
        party, strictness = _PARTIES.get(key, (None, -1))
        if _STRICTNESS[require] > strictness:
            party = party or ClientParty(key[1], key[0])
            checked, note = _configure(party, require, fl_ctx)  # raises: the party keeps its old setting
            _PARTIES[key] = (party, _STRICTNESS[require])
            log(checked, note)
        return party


def _float(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise sa.SecAggError(f"cannot mask {name!r} ({array.dtype}): only float tensors are aggregated")
    return array.astype(np.float64)


class SecureAggregationFilter(Filter):
    """Answer the secure-aggregation steps and mask every model update this site sends (see the module doc).

    Args:
        max_num_examples: the largest example count the site may weight its update with (checked here,
            since the server never sees it).
        keep_metrics: send the training metrics along unmasked; default False.
        require_signed_keys: check every site's signed keys against this site's root CA: None (default) when
            the startup kit has a certificate, True always (refuse without one), False never (see the module doc).
    """

    def __init__(self, max_num_examples: float = 1_000_000, keep_metrics: bool = False,
                 require_signed_keys: Optional[bool] = None):
        super().__init__()
        self.max_num_examples = max_num_examples
        self.keep_metrics = keep_metrics
        self.require_signed_keys = require_signed_keys
        if check_num_examples(1, max_num_examples) is not None or isinstance(max_num_examples, bool):
            raise ConfigError(f"max_num_examples for SecureAggregationFilter must be a number >= 1, "
                              f"got {max_num_examples!r}")
        if not isinstance(keep_metrics, bool):
            raise ConfigError(f"keep_metrics for SecureAggregationFilter must be true or false, got {keep_metrics!r}")
        if not (require_signed_keys is None or isinstance(require_signed_keys, bool)):
            raise ConfigError(f"require_signed_keys for SecureAggregationFilter must be true, false or null (when the "
                              f"startup kit has a certificate), got {require_signed_keys!r}")

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        direction = fl_ctx.get_prop(FLContextKey.FILTER_DIRECTION)
        if direction == FilterKey.IN:
            request = self._meta(shareable).get(keys.SECAGG)
            fl_ctx.set_prop(keys.SECAGG_REQUEST, request, private=True, sticky=False)
            if isinstance(request, dict) and request.get("step") in _STEPS:
                try:
                    self._site_party(fl_ctx)  # every instance on the site says how strict it is before any answers
                except sa.SecAggError as err:
                    self.log_error(fl_ctx, str(err))
                    raise
            return shareable
        if direction != FilterKey.OUT:
            raise RuntimeError(f"{type(self).__name__}: unknown filter direction {direction!r}; refusing to pass data")
        if shareable.get_return_code() != ReturnCode.OK:
            return shareable
        try:
            dxo = from_shareable(shareable)
        except Exception:
            return shareable  # no DXO: no tensors to mask
        answered = dxo.get_meta_prop(keys.SECAGG)
        if isinstance(answered, dict) and answered.get("answered"):
            return shareable  # a second instance (job and site both list the filter): already done
        request = fl_ctx.get_prop(keys.SECAGG_REQUEST)
        step = request.get("step") if isinstance(request, dict) else None
        site, task = fl_ctx.get_identity_name(), fl_ctx.get_prop(FLContextKey.TASK_NAME)
        if dxo.data_kind in _MODEL_KINDS:
            if step != "train":
                message = (f"{type(self).__name__}: {site} sends model updates only under secure aggregation; the "
                           f"result of task {task!r} carries no secure-aggregation round, so it stays here (run the "
                           f"job with flaretune.aggregation.secagg.SecAggController)")
                self.log_error(fl_ctx, message)
                raise UnsafeJobError(message)
            return self._masked(dxo, request, fl_ctx).update_shareable(shareable)
        if step in _STEPS[:3]:
            try:
                answer = self._answer(step, request, fl_ctx)
            except sa.SecAggError as err:
                self.log_error(fl_ctx, str(err))  # the one line for the site admin; FLARE then logs the traceback
                raise
            reply = DXO(DataKind.METRICS, data={}, meta={keys.SECAGG: {**answer, "round": request["round"],
                                                                           "answered": True}})
            return reply.update_shareable(shareable)
        return shareable  # metrics (validation scores) and anything without tensors

    @staticmethod
    def _meta(shareable: Shareable) -> dict:
        try:
            return dict(from_shareable(shareable).meta or {})
        except Exception:
            return {}

    def _site_party(self, fl_ctx: FLContext) -> ClientParty:
        def log(checked: bool, note: str) -> None:
            (self.log_info if checked else self.log_warning)(fl_ctx, note)

        return _party(fl_ctx, self.require_signed_keys, log)

    def _answer(self, step: str, request: dict, fl_ctx: FLContext) -> dict:
        party, rid = self._site_party(fl_ctx), request["round"]
        if step == "advertise":
            return {"keys": party.advertise(rid, request["sites"], int(request["threshold"]))}
        if step == "share":
            sealed = party.share_keys(rid, request["roster"])
            if party.trust is not None:
                peers = ", ".join(sorted(request["roster"]))
                self.log_info(fl_ctx, f"{party.name}: verified the signed keys of {peers} for round {rid!r} "
                                      f"(certificates chain to the root CA, names match)")
            return {"sealed": sealed}
        inbox = request["inbox"].get(party.name, {})
        shares = party.unmask(rid, request["u2"], inbox)
        self.log_info(fl_ctx, f"{party.name}: revealed {len(shares)} share(s) to unmask the sum of "
                              f"{len(request['u2'])} site(s)")
        return {"shares": shares}

    def _masked(self, dxo: DXO, request: dict, fl_ctx: FLContext) -> DXO:
        party = self._site_party(fl_ctx)
        n = dxo.get_meta_prop(keys.NUM_EXAMPLES)
        reason = check_num_examples(n, self.max_num_examples)
        if reason:
            raise sa.SecAggError(f"{party.name}: cannot weight the update: {reason}")
        f, k, u1 = int(request["fraction_bits"]), int(request["modulus_bits"]), list(request["u1"])
        values = {name: _float(name, v) for name, v in dxo.data.items()}
        vector, layout = sa.flatten(values)
        weighted = np.concatenate([vector * float(n), [float(n)]])  # n·x, then n: both summed under the masks
        masked = party.mask(request["round"], u1, sa.encode(weighted, f, k, len(u1)), k)
        parts = zip([name for name, _ in layout], _split(masked[:-1], layout))
        data = {name: part if k != 24 else sa.to_wire(part.ravel(), k) for name, part in parts}  # 24: 3 bytes a word
        data[keys.SECAGG_WEIGHT] = sa.to_wire(masked[-1:], k)
        drop = {keys.NUM_EXAMPLES, MetaKey.NUM_STEPS_CURRENT_ROUND, MetaKey.FILTER_HISTORY}
        if not self.keep_metrics:
            drop.add(MetaKey.INITIAL_METRICS)
        meta = {key: value for key, value in (dxo.meta or {}).items() if key not in drop}
        meta[keys.UPLOAD_BYTES] = int(sum(a.nbytes for a in data.values()))
        meta[keys.SECAGG] = {"round": request["round"], "layout": layout, "fraction_bits": f, "modulus_bits": k,
                             "masked": True, "answered": True}
        self.log_info(fl_ctx, f"{party.name}: masked its update ({len(layout)} tensors, {len(masked):,} values, "
                              f"{k}-bit fixed point) for the sum of {len(u1)} sites")
        return DXO(data_kind=dxo.data_kind, data=data, meta=meta)


def _split(vector: np.ndarray, layout):
    offset = 0
    for _, shape in layout:
        size = int(np.prod(shape)) if len(shape) else 1
        yield vector[offset:offset + size].reshape(shape)
        offset += size
