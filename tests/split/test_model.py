"""A split model trains exactly as the same model unsplit on the same batches (tiny BERT, CPU)."""

import pytest

torch = pytest.importorskip("torch")

from flaretune.errors import ConfigError  # noqa: E402
from flaretune.models.lora import PeftSpec, adapter_state  # noqa: E402
from flaretune.split.model import partition, split_token_classifier  # noqa: E402
from flaretune.split.steps import MiddleServer, SiteSide  # noqa: E402
from flaretune.train.loop import batches  # noqa: E402
from flaretune.train.ner import Encoded  # noqa: E402

LABELS = ["O", "B-DRUG", "I-DRUG"]
SPEC = PeftSpec(model_name="tiny-minilm-ner", labels=LABELS, lora_r=4, seed=3)


def _model(layers: int):
    """The tiny twin (2 blocks) or a 4-block one of the same shape, wrapped in the spec's LoRA."""
    if layers == 2:
        return SPEC.build()
    import transformers
    from peft import get_peft_model

    torch.manual_seed(SPEC.seed)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=64, num_labels=len(LABELS))
    return get_peft_model(transformers.BertForTokenClassification(config), SPEC.lora_config())


def _data(n=12):
    g = torch.Generator().manual_seed(0)
    records = []
    for i in range(n):
        length = 5 + i % 6  # ragged: padding and the mask cross the cut
        ids = torch.randint(1000, 2000, (length,), generator=g).tolist()
        labels = torch.randint(0, len(LABELS), (length,), generator=g).tolist()
        records.append(Encoded(ids, labels, []))
    return list(batches(records, 4, 0, shuffle=True, seed=1))


def _unsplit(layers, data, lr=5e-3):
    model = _model(layers)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    torch.manual_seed(7)
    losses = []
    for ids, mask, labels in data:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, adapter_state(model)


def _split(layers, data, bottom, top, lr=5e-3):
    model = _model(layers)
    parts = split_token_classifier(model, bottom, top)
    site, server = SiteSide(parts.bottom, parts.top, lr), MiddleServer(parts.middle, lr)
    site.train()
    parts.middle.train()
    torch.manual_seed(7)
    losses = []
    for ids, mask, labels in data:
        lower = site.forward(ids, mask)
        (upper,) = server.forward([(lower, mask)])
        loss, upper_grad = site.top_backward(upper, mask, labels)
        (lower_grad,) = server.backward([upper_grad])
        site.finish(lower_grad)
        losses.append(loss)
    return losses, adapter_state(model), parts


@pytest.mark.parametrize("layers,bottom,top", [(2, 1, 0), (2, 0, 1), (4, 1, 1), (4, 1, 2)])
def test_split_losses_and_weights_match_unsplit(layers, bottom, top):
    data = _data()
    want_losses, want = _unsplit(layers, data)
    got_losses, got, _ = _split(layers, data, bottom, top)
    assert len(got_losses) == len(want_losses) == 3
    assert got_losses == pytest.approx(want_losses, abs=1e-5)  # float32 sums in another order
    assert want_losses[0] != pytest.approx(want_losses[-1], abs=1e-3)  # it trained
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)


def test_parts_share_the_model_and_partition_by_block():
    model = _model(4)
    parts = split_token_classifier(model, 1, 1)
    site, server = partition(adapter_state(model), 4, 1, 1)
    assert {k for k in server if "lora" in k} and all(".layer.1." in k or ".layer.2." in k for k in server)
    assert any("classifier" in k for k in site) and any(".layer.0." in k for k in site)
    assert any(".layer.3." in k for k in site)
    n_site = sum(p.numel() for p in list(parts.bottom.parameters()) + list(parts.top.parameters()))
    n_server = sum(p.numel() for p in parts.middle.parameters())
    assert n_site + n_server == sum(p.numel() for p in model.parameters())


def test_noise_is_added_to_what_leaves_only():
    model = _model(2)
    parts = split_token_classifier(model, 1, 0)
    ids, mask, _ = _data()[0]
    parts.bottom.eval()
    clean = SiteSide(parts.bottom, parts.top, sigma=0.0).forward(ids, mask)
    noisy_side = SiteSide(parts.bottom, parts.top, sigma=0.5, seed=11)
    noisy = noisy_side.forward(ids, mask)
    expected = torch.randn(clean.shape, generator=torch.Generator().manual_seed(11)) * 0.5
    torch.testing.assert_close(noisy - clean, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(noisy_side._lower.detach(), clean)


@pytest.mark.parametrize("bottom,top", [(1, 1), (2, 0), (-1, 0)])
def test_a_cut_that_leaves_the_server_nothing_is_refused(bottom, top):
    with pytest.raises(ConfigError, match="bottom_layers"):
        split_token_classifier(_model(2), bottom, top)
