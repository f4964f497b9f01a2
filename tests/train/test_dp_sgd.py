"""DP-SGD step: exact per-example gradients, the exact private update, Poisson lots, the adapter really moves."""

from dataclasses import dataclass
from typing import List

import pytest
import torch

from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec
from flaretune.train import loop
from flaretune.train.dp_sgd import DPSGDStep
from flaretune.train.flow import LocalTraining

SPECS = {
    "tiny-minilm-ner": dict(labels=["O", "B-X", "I-X"], target_modules=["query", "value"]),
    "tiny-smollm2": dict(target_modules=["q_proj", "v_proj"]),
}


@dataclass
class Record:
    input_ids: List[int]
    labels: List[int]


def records(name, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 5 + i % 4  # different lengths: the batch is padded
        ids = torch.randint(100, 2000, (length,), generator=g).tolist()
        if name == "tiny-minilm-ner":
            labels = [-100] + torch.randint(0, 3, (length - 1,), generator=g).tolist()
        else:  # causal: the last two tokens are the answer
            labels = [-100] * (length - 2) + ids[-2:]
        out.append(Record(ids, labels))
    return out


def build(name, dropout=0.0):
    torch.manual_seed(0)
    model = PeftSpec(model_name=name, lora_dropout=dropout, **SPECS[name]).build()
    with torch.no_grad():  # LoRA B starts at 0, which makes A's gradient 0: give both a signal
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model


def whole_batch(recs):
    return next(loop.batches(recs, len(recs), pad_id=0))


def reference_grads(model, batch):
    """A plain loop: each padded row on its own, loss.backward(), read .grad."""
    ids, mask, labels = batch
    out = []
    for b in range(ids.shape[0]):
        model.zero_grad(set_to_none=True)
        model(input_ids=ids[b:b + 1], attention_mask=mask[b:b + 1], labels=labels[b:b + 1]).loss.backward()
        out.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    model.zero_grad(set_to_none=True)
    return out


def started_step(model, n, **kwargs):
    args = dict(noise_multiplier=0.8, max_grad_norm=0.05, sample_rate=1.0, dataset_size=n, learning_rate=0.01)
    step = DPSGDStep(**{**args, **kwargs})
    step.start(model, [p for p in model.parameters() if p.requires_grad], total_steps=1)
    return step


@pytest.mark.parametrize("name", list(SPECS))
def test_per_sample_grads_equal_a_plain_per_example_backward_loop(name):
    model, recs = build(name), records(name)
    model.eval()  # no dropout: both sides compute the same function
    batch = whole_batch(recs)
    step = started_step(model, len(recs))
    grads, losses = step.per_sample_grads(model, *batch)
    want = reference_grads(model, batch)
    assert torch.isfinite(losses).all()
    for (pname, _), g in zip(step._named, grads):
        for b in range(len(recs)):
            assert torch.allclose(g[b], want[b][pname], atol=1e-6, rtol=0), (pname, b)
    assert any(float(g.abs().max()) > 1e-3 for g in grads)  # a real signal, not zeros on both sides


def test_per_sample_grads_equal_opacus_grad_sample_module():
    # Opacus computes per-sample gradients from hooks on the batched forward: an independent implementation
    from opacus import GradSampleModule

    name = "tiny-minilm-ner"
    model, recs = build(name), records(name)
    model.eval()
    ids, mask, labels = whole_batch(recs)
    step = started_step(model, len(recs))
    grads, _ = step.per_sample_grads(model, ids, mask, labels)
    gsm = GradSampleModule(model, loss_reduction="sum")
    for module in model.modules():  # Opacus records activations only in training mode; Linear is mode-free
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            module.train()
    logits = gsm(input_ids=ids, attention_mask=mask).logits
    per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    counts = (labels != -100).sum(1)
    (per_token.sum(1) / counts).sum().backward()  # sum over examples of each example's mean token loss
    for (pname, p), g in zip(step._named, grads):
        assert torch.allclose(p.grad_sample, g, atol=1e-6, rtol=0), pname
    gsm._close()


def test_one_step_is_the_exact_private_update():
    name = "tiny-minilm-ner"
    model, recs = build(name), records(name)
    model.eval()
    batch = whole_batch(recs)
    want = reference_grads(model, batch)
    step = started_step(model, len(recs))  # q = 1: every record is in the lot
    step.generator = torch.Generator().manual_seed(11)
    step(model, batch)
    # by hand: clip each example over all parameters, sum, add N(0, (zC)^2) in the step's draw order, / qN
    names = [n for n, _ in step._named]
    norms = [torch.sqrt(sum((w[n].double() ** 2).sum() for n in names)) for w in want]
    g = torch.Generator().manual_seed(11)
    torch.rand(len(recs), generator=g)  # the Poisson draw comes first
    assert min(norms) > 0.05  # every example is clipped
    for n, p in step._named:
        total = sum(w[n].double() * min(1.0, 0.05 / float(norm)) for w, norm in zip(want, norms))
        noise = torch.normal(0.0, 0.8 * 0.05, size=tuple(p.shape), generator=g)
        assert torch.allclose(p.grad.double(), (total + noise.double()) / len(recs), atol=1e-7, rtol=0), n
    assert step.accounting() == (0.8, 1.0, 1)


@pytest.mark.parametrize("name", list(SPECS))
def test_one_dp_step_changes_the_adapter_and_nothing_else(name):
    model, recs = build(name, dropout=0.1), records(name, n=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = LocalTraining(max_steps=1, batch_size=len(recs), learning_rate=0.01, train_step="dpsgd", step_args=dict(
        noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, dataset_size=len(recs)))
    step = settings.step()
    result = loop.run(model, recs, pad_id=0, step=step, batch_size=len(recs), max_steps=1)
    assert result.steps == 1 and step.steps_taken == 1 and step.accounting() == (1.0, 0.5, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    for n, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        assert moved == (n in trainable), n  # every adapter tensor moved, no frozen one did


class Scalar(torch.nn.Module):
    """loss = w * x for a record holding x: its per-example gradient is exactly x."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, labels):
        from types import SimpleNamespace

        return SimpleNamespace(loss=(self.w * input_ids.float()).sum())


def test_lots_are_poisson_samples_of_the_whole_dataset():
    module, n, q, steps = Scalar(), 100, 0.1, 300
    recs = [Record([1], [0]) for _ in range(n)]
    step = DPSGDStep(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=q, dataset_size=n, learning_rate=0.01)
    sizes = []
    real = step.per_sample_grads
    step.per_sample_grads = lambda m, ids, mask, labels: sizes.append(ids.shape[0]) or real(m, ids, mask, labels)
    loop.run(module, recs, pad_id=0, step=step, batch_size=n, max_steps=steps)
    lots = sizes + [0] * (steps - len(sizes))  # an empty lot skips the per-example pass
    mean, sd = sum(lots) / steps, (n * q * (1 - q) / steps) ** 0.5  # binomial(n, q) per step
    assert abs(mean - n * q) < 4 * sd and len(set(lots)) > 3


def test_a_batch_that_is_not_the_whole_dataset_is_refused():
    module = Scalar()
    recs = [Record([1], [0]) for _ in range(10)]
    step = DPSGDStep(sample_rate=0.5, dataset_size=10)
    with pytest.raises(ConfigError, match="each batch must be the whole dataset: got a batch of 4; set batch_size >= 10"):
        loop.run(module, recs, pad_id=0, step=step, batch_size=4, max_steps=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"noise_multiplier": 0}, "noise_multiplier for dpsgd must be a finite number > 0"),
    ({"max_grad_norm": 0}, "max_grad_norm for dpsgd must be a finite number > 0"),
    ({"sample_rate": 0}, r"sample_rate for dpsgd must be in \(0, 1\]"),
    ({"dataset_size": 0}, "dataset_size for dpsgd must be the site's record count"),
])
def test_bad_dp_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        loop.make_step("dpsgd", **{"sample_rate": 0.1, "dataset_size": 10, **kwargs})
