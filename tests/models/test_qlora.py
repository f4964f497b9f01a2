"""QLoRA (arXiv:2305.14314) on the tiny twins: the frozen base is held in NF4 with double quantization,
the adapters train, and the traveling tensors are exactly LoRA's."""

import pytest
import torch

from flaretune.data.types import CLINICAL_LABELS, Sentence
from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec
from flaretune.models.qlora import QloraMethod, base_storage, bitsandbytes_missing
from flaretune.train.methods import LoraMethod
from flaretune.train.ner_trainer import NerTrainer

pytestmark = pytest.mark.skipif(bitsandbytes_missing() is not None, reason=f"qlora: {bitsandbytes_missing()}")

NER = dict(model_name="tiny-minilm-ner", labels=list(CLINICAL_LABELS), lora_dropout=0.0)


@pytest.fixture(scope="module")
def ner_model():
    return QloraMethod(PeftSpec(**NER)).build()


def test_base_linear_weights_are_held_in_4bit_nf4_with_double_quantization(ner_model):
    import bitsandbytes as bnb

    query = ner_model.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer
    assert isinstance(query, bnb.nn.Linear4bit)
    assert query.weight.dtype == torch.uint8 and query.weight.numel() == 32 * 32 // 2  # two codes per byte
    state = query.weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # nested: the absmax constants are quantized too
    # tiny twin: 2 layers x (q, k, v, attention out, intermediate 32x64, output 64x32) all in 4 bit
    storage = base_storage(ner_model)
    assert storage["linear4bit_layers"] == 12
    assert storage["packed_weight_bytes"] * 8 == storage["float32_weight_bytes"]
    assert ner_model.base_model.model.classifier.modules_to_save["default"].weight.dtype == torch.float32


def test_adapters_change_after_a_step_and_the_4bit_base_does_not(ner_model):
    trainer = NerTrainer(PeftSpec(**NER), max_length=16, model=ner_model)
    sentences = [Sentence(["give", d, "for", x, "."], ["O", "B-Chemical", "O", "B-Disease", "O"])
                 for d in ("aspirin", "heparin") for x in ("fever", "gout")]
    before = trainer.get_params()
    query = ner_model.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer
    packed = query.weight.detach().clone()
    trainer.fit(trainer.encode(sentences), max_steps=2, learning_rate=1e-2, batch_size=4)
    after = trainer.get_params()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(before)  # every adapter A, B and the head moved
    assert torch.equal(query.weight, packed) and not query.weight.requires_grad
    trainer.evaluate(trainer.encode(sentences))  # inference keeps the NF4 double-quantized layout too
    assert torch.equal(query.weight, packed) and query.weight.quant_state.nested


def test_the_traveling_tensors_are_loras(ner_model):
    spec = PeftSpec(**NER)
    qlora, lora = QloraMethod(spec), LoraMethod(spec)
    ours, theirs = qlora.get_params(ner_model), lora.get_params(lora.build())
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert QloraMethod.exchange == "lora"
    qlora.set_params(ner_model, theirs)
    assert all(torch.equal(v, theirs[k]) for k, v in qlora.get_params(ner_model).items())


def test_a_causal_lm_keeps_its_tied_head_in_full_precision():
    spec = PeftSpec(model_name="tiny-smollm2", target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = QloraMethod(spec).build()
    inner = model.base_model.model
    assert inner.lm_head.weight.dtype == torch.float32
    assert inner.lm_head.weight.data_ptr() == inner.model.embed_tokens.weight.data_ptr()
    assert base_storage(model)["linear4bit_layers"] == 2 * 7  # q, k, v, o, gate, up, down per layer
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)


@pytest.mark.parametrize("kwargs, message", [
    ({"compute_dtype": "int8"}, "qlora compute_dtype must be one of float32, bfloat16, float16, got 'int8'"),
    ({"device": "tpu"}, "qlora device must be 'cpu' or 'cuda', got 'tpu'"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        QloraMethod(PeftSpec(**NER), **kwargs)
