"""A site privacy filter: only adapter tensors (and small heads) may leave the site.

Site admins put :class:`AdapterOnlyGuard` in ``local/privacy.json`` as a task result filter (the
provisioning templates do this). FLARE applies a site's privacy filters before the job's own filters,
to every task of every job that runs in that scope, so the guard sees the tensors exactly as the
executor produced them. A result that carries any other tensor — a base-model weight, a whole state
dict — or more than ``max_mb`` of tensors is refused with an error naming the offending tensors: the
guard raises FLARE's ``UnsafeJobError``, so the site marks the job unsafe and answers ``UNSAFE_JOB``
instead of sending the data. Metrics-only results pass untouched.
"""

import fnmatch
from typing import List, Optional, Sequence

from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import UnsafeJobError
from nvflare.apis.shareable import Shareable

from flaretune.errors import ConfigError
from flaretune.ops.quant import payload_nbytes

DEFAULT_ALLOWED = ("*lora_*", "*.classifier.*", "*.score.*", "*modules_to_save*")
_KINDS = [DataKind.WEIGHTS, DataKind.WEIGHT_DIFF]


def check_tensor_names(names: Sequence[str], allowed: Sequence[str]) -> List[str]:
    """The names no pattern in ``allowed`` matches (glob patterns, case-sensitive)."""
    return [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in allowed)]


class AdapterOnlyGuard(DXOFilter):
    def __init__(self, allowed: Optional[List[str]] = None, max_mb: float = 64.0):
        """Refuse any WEIGHTS / WEIGHT_DIFF result with tensors outside ``allowed`` or above ``max_mb``.

        Args:
            allowed: glob patterns of tensor names that may leave the site; default LoRA matrices and
                classification / score heads (``*lora_*``, ``*.classifier.*``, ``*.score.*``,
                ``*modules_to_save*``).
            max_mb: largest total tensor payload in MiB one result may carry.
        """
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.allowed = allowed
        self.max_mb = max_mb
        self._allowed = list(allowed) if allowed is not None else list(DEFAULT_ALLOWED)
        if not self._allowed or not all(isinstance(p, str) and p for p in self._allowed):
            raise ConfigError(f"allowed for AdapterOnlyGuard must be a non-empty list of patterns, got {allowed!r}")
        if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or max_mb <= 0:
            raise ConfigError(f"max_mb for AdapterOnlyGuard must be a number > 0, got {max_mb!r}")

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        names = list(dxo.data)
        refused = check_tensor_names(names, self._allowed)
        if refused:
            shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
            message = (f"{type(self).__name__}: this site only lets adapter tensors leave; refused "
                       f"{len(refused)} of {len(names)} tensors ({shown}); allowed patterns {self._allowed}")
            self.log_error(fl_ctx, message)
            raise UnsafeJobError(message)
        total = payload_nbytes(dxo.data)
        if total > self.max_mb * (1 << 20):
            message = (f"{type(self).__name__}: result carries {total / (1 << 20):.1f} MiB of tensors, "
                       f"above this site's limit of {self.max_mb:g} MiB")
            self.log_error(fl_ctx, message)
            raise UnsafeJobError(message)
        self.log_info(fl_ctx, f"{type(self).__name__}: {len(names)} adapter tensors, "
                              f"{total / (1 << 20):.2f} MiB, allowed to leave")
        return None
