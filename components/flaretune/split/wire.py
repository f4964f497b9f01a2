"""The aux-message topics of split learning and their payloads.

A tensor travels as its raw bytes with its shape and dtype (``<name>``, ``<name>.shape``, ``<name>.dtype``):
FLARE 2.9 sends a numpy array in a message by reference, the receiver downloading it from the sender,
which failed for aux requests ("failed to download from site-1.simulate_job"); bytes travel inline.
"""

from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.shareable import Shareable, make_reply

FORWARD = "flaretune.split.forward"  # {"hidden", "mask"} -> {"tensor": upper-cut activations}
BACKWARD = "flaretune.split.backward"  # {"grad"} -> {"tensor": lower-cut gradient}
LEAVE = "flaretune.split.leave"  # {} -> OK: the site trains no more this round


def _put(message: Shareable, name: str, tensor) -> Shareable:
    array = tensor.detach().cpu().contiguous().numpy()
    message[name], message[name + ".shape"], message[name + ".dtype"] = array.tobytes(), list(array.shape), str(array.dtype)
    return message


def request(**tensors) -> Shareable:
    out = Shareable()
    for name, tensor in tensors.items():
        _put(out, name, tensor)
    return out


def read(message: Shareable, *names):
    """The named tensors of a payload (torch, writable copies)."""
    import numpy as np
    import torch

    return [torch.from_numpy(np.frombuffer(message[name], dtype=message[name + ".dtype"])
                             .reshape(message[name + ".shape"]).copy()) for name in names]


def reply(tensor) -> Shareable:
    return _put(make_reply(ReturnCode.OK), "tensor", tensor)


def nbytes(message: Shareable) -> int:
    """Bytes of the tensors a payload carries (what the cut costs on the wire, before framing)."""
    return int(sum(len(v) for v in message.values() if isinstance(v, bytes)))


# -- the round's task and result: a WEIGHTS DXO of the client parts, so the sites' privacy filters (the
# adapter guard, client DP) see them as they see a LoRA job's; the aux payloads above pass no filter.
def weights(params: dict, meta: dict) -> Shareable:
    return DXO(data_kind=DataKind.WEIGHTS, data=dict(params), meta=dict(meta)).to_shareable()


def read_weights(message: Shareable) -> dict:
    """``{**meta, "site_params": data}`` of a :func:`weights` message."""
    dxo = from_shareable(message)
    return {**(dxo.meta or {}), "site_params": dxo.data}
