"""Bytes on the wire: the size of a Shareable as FLARE serialises it (FOBS)."""

from typing import Dict, Optional


def register_decomposers() -> None:
    from nvflare.app_common.decomposers import common_decomposers
    from nvflare.app_opt.pt.decomposers import TensorDecomposer
    from nvflare.fuel.utils import fobs

    common_decomposers.register()
    fobs.register(TensorDecomposer)


def shareable_bytes(shareable) -> int:
    from nvflare.fuel.utils import fobs

    register_decomposers()
    return len(fobs.dumps(shareable))


def update_wire_bytes(params: Dict[str, object], quantization: Optional[str] = None) -> int:
    """FOBS size of one client's training result carrying ``params``, after quantization if any."""
    from nvflare.apis.dxo import DXO, DataKind
    from nvflare.apis.fl_context import FLContext

    shareable = DXO(DataKind.WEIGHTS, data=dict(params)).to_shareable()
    if quantization and quantization != "none":
        from flaretune.filters.quantize import QuantizeFilter

        shareable = QuantizeFilter(quantization_type=quantization).process(shareable, FLContext())
    return shareable_bytes(shareable)
