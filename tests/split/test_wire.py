"""What a split site sends: aux payloads as raw tensors, and the round's client parts as a WEIGHTS DXO that the
site's adapter guard checks as it checks a LoRA job's result."""

import numpy as np
import pytest
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import UnsafeJobError

torch = pytest.importorskip("torch")

from flaretune.filters.guard import AdapterOnlyGuard  # noqa: E402
from flaretune.models.lora import PeftSpec, adapter_state  # noqa: E402
from flaretune.split import wire  # noqa: E402
from flaretune.split.model import drop_middle  # noqa: E402


def test_aux_payload_round_trips_tensors_and_counts_their_bytes():
    hidden = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    message = wire.request(hidden=hidden, mask=mask)
    got_hidden, got_mask = wire.read(message, "hidden", "mask")
    assert torch.equal(got_hidden, hidden) and torch.equal(got_mask, mask) and got_mask.dtype == torch.int64
    assert wire.nbytes(message) == 2 * 5 * 32 * 4 + 2 * 5 * 8


def _site_parts():
    model = PeftSpec(model_name="tiny-minilm-ner", labels=["O", "B-X", "I-X"], lora_r=2).build()
    drop_middle(model, 1, 0)
    return {k: v.numpy() for k, v in adapter_state(model).items()}


def test_the_guard_lets_the_client_parts_pass_and_meta_comes_back():
    parts = _site_parts()
    assert parts and all(".layer.1." not in k for k in parts)  # the middle block's adapter stays at the server
    result = AdapterOnlyGuard().process(wire.weights(parts, {"num_examples": 24, "stats": {"steps": 3}}), FLContext())
    got = wire.read_weights(result)
    assert got["num_examples"] == 24 and got["stats"] == {"steps": 3}
    assert set(got["site_params"]) == set(parts)
    assert all(np.array_equal(got["site_params"][k], parts[k]) for k in parts)


def test_the_guard_refuses_client_parts_carrying_a_base_weight():
    parts = {**_site_parts(), "base_model.model.bert.embeddings.word_embeddings.weight": np.zeros((4, 32), np.float32)}
    with pytest.raises(UnsafeJobError, match="word_embeddings"):
        AdapterOnlyGuard().process(wire.weights(parts, {"num_examples": 1}), FLContext())
