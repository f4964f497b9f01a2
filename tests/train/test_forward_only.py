"""Forward-only LoRA steps (FwdLLM, arXiv:2308.13894) on the tiny MiniLM twin: descent, gradient alignment,
no autograd graph, and the server's exact replay of a shared-seed round."""

import pytest
import torch

from flaretune.data.types import CLINICAL_LABELS, Sentence
from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec
from flaretune.ops import zo
from flaretune.train import loop
from flaretune.train.forward_only import ForwardOnlyStep
from flaretune.train.ner_trainer import NerTrainer

SEEDS = range(8)


@pytest.fixture(scope="module")
def trainer():
    spec = PeftSpec(model_name="tiny-minilm-ner", labels=list(CLINICAL_LABELS), lora_dropout=0.0, seed=0)
    return NerTrainer(spec, max_length=16)


@pytest.fixture(scope="module")
def batch(trainer):
    drugs, diseases = ["aspirin", "warfarin", "heparin"], ["fever", "asthma", "gout"]
    sentences = [Sentence(["give", d, "for", x, "."], ["O", "B-Chemical", "O", "B-Disease", "O"])
                 for d in drugs for x in diseases]
    return next(loop.batches(trainer.encode(sentences), 16, trainer.pad_id))


@pytest.fixture
def fresh(trainer):
    """The trainer with its initial adapter restored after the test."""
    start = trainer.get_params()
    yield trainer
    trainer.set_params(start)


def _trainable(trainer):
    return [p for p in trainer.model.parameters() if p.requires_grad]


def _loss(trainer, batch):
    trainer.model.eval()
    with torch.no_grad():
        ids, mask, labels = batch
        return float(trainer.model(input_ids=ids, attention_mask=mask, labels=labels).loss)


def test_a_step_lowers_the_loss_on_average_over_seeds(fresh, batch):
    start, before, drops = fresh.get_params(), _loss(fresh, batch), []
    for seed in SEEDS:
        fresh.set_params(start)
        step = ForwardOnlyStep(learning_rate=0.05, perturbations=4, seed=seed)
        step.start(fresh.model, _trainable(fresh), 1)
        step(fresh.model, batch)
        drops.append(before - _loss(fresh, batch))
    assert sum(drops) / len(drops) > 0


def test_the_estimate_points_along_the_true_gradient(fresh, batch):
    params = _trainable(fresh)
    fresh.model.eval()
    ids, mask, labels = batch
    loss = fresh.model(input_ids=ids, attention_mask=mask, labels=labels).loss
    true = torch.autograd.grad(loss, params)
    cosines = []
    for seed in SEEDS:
        step = ForwardOnlyStep(perturbations=4, seed=seed)
        step.start(fresh.model, params, 1)
        grad, _, _ = step.gradient_estimate(fresh.model, batch)
        cosines.append(zo.cosine(grad, true))
    assert sum(cosines) / len(cosines) > 0


def test_no_autograd_graph_is_built(fresh, batch):
    seen = []

    def record(module, args, kwargs, output):
        seen.append((torch.is_grad_enabled(), output.loss.requires_grad, output.loss.grad_fn))

    handle = fresh.model.register_forward_hook(record, with_kwargs=True)
    try:
        step = ForwardOnlyStep(perturbations=3)
        step.start(fresh.model, _trainable(fresh), 1)
        step(fresh.model, batch)
    finally:
        handle.remove()
    assert seen == [(False, False, None)] * 6  # 2 forward passes per perturbation, none with a graph
    assert all(p.grad is None for p in _trainable(fresh))


@pytest.mark.parametrize("candidates", [1, 3])
def test_the_server_replays_the_sites_round_exactly(fresh, batch, candidates):
    start = fresh.get_params()  # adapter_state order is the order of the trainable parameters
    step = ForwardOnlyStep(learning_rate=0.05, perturbations=2, candidates=candidates, seed=7, round_index=2,
                           num_rounds=3)
    step.start(fresh.model, _trainable(fresh), 3)
    for _ in range(3):
        step(fresh.model, batch)
    upload = step.upload()
    assert upload["projections"].shape == (3, 2) and upload["projections"].nbytes == 3 * 2 * 4
    rebuilt = zo.replay(list(start.values()), upload["projections"].tolist(), job_seed=7, round_index=2,
                        learning_rate=0.05, candidates=candidates)
    site = list(fresh.get_params().values())
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, site))
    assert any(not torch.equal(a, b) for a, b in zip(site, start.values()))  # the round did change the adapter


def test_selection_keeps_the_candidate_most_aligned_with_the_reference():
    shapes = [(3, 4), (5,)]
    reference = zo.direction(shapes, zo.perturbation_seed(0, 0, 0, 0, candidate=2))
    chosen = zo.choose_direction(shapes, 0, 0, 0, 0, candidates=3, reference=reference)
    assert all(torch.equal(a, b) for a, b in zip(chosen, reference))
    first = zo.choose_direction(shapes, 0, 0, 0, 0, candidates=3, reference=None)
    assert all(torch.equal(a, b) for a, b in zip(first, zo.direction(shapes, zo.perturbation_seed(0, 0, 0, 0))))


def test_seeds_differ_by_round_step_perturbation_and_site():
    seeds = {zo.perturbation_seed(0, r, s, k, 0, site) for r in range(2) for s in range(2) for k in range(2)
             for site in range(2)}
    assert len(seeds) == 16 and zo.perturbation_seed(1, 2, 3, 4) == zo.perturbation_seed(1, 2, 3, 4)


def test_the_estimate_is_the_mean_of_projected_directions():
    dirs = [[torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])]]
    assert torch.equal(zo.estimate(dirs, [3.0, -1.0])[0], torch.tensor([1.5, -1.0]))
    assert zo.projection(1.5, 0.5, 0.25) == 2.0


@pytest.mark.parametrize("kwargs, message", [
    ({"perturbations": 0}, "forward_only perturbations must be an int >= 1, got 0"),
    ({"epsilon": -1e-3}, "forward_only epsilon must be a number > 0, got -0.001"),
    ({"candidates": 1.5}, "forward_only candidates must be an int >= 1, got 1.5"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ForwardOnlyStep(**kwargs)


def test_the_method_trains_lora_forward_only_and_exchanges_lora(batch):
    from flaretune.train.methods import exchange_of, make_method

    spec = PeftSpec(model_name="tiny-minilm-ner", labels=list(CLINICAL_LABELS), method="forward_only",
                    method_args={"learning_rate": 0.05, "perturbations": 2}, seed=3)
    trainer = NerTrainer(spec, max_length=16)
    step = trainer.method_step(loop.BackpropStep(round_index=1, num_rounds=4))
    assert isinstance(step, ForwardOnlyStep)
    assert (step.learning_rate, step.perturbations, step.seed, step.round_index) == (0.05, 2, 3, 1)
    assert exchange_of("forward_only") == "lora"
    lora = make_method("lora", spec)
    assert set(trainer.get_params()) == set(lora.get_params(lora.build()))
    with pytest.raises(ConfigError, match="forward_only perturbations must be an int >= 1, got 0"):
        make_method("forward_only", spec, perturbations=0)
    with pytest.raises(ConfigError, match="cannot apply the job's train step 'fedprox'; use method 'lora'"):
        trainer.method_step(loop.FedProxStep(mu=0.1))
