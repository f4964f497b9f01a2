"""The one training loop: schedules, the pluggable step, FedProx, stopping."""

import pytest

from flaretune.errors import ConfigError
from flaretune.train import loop
from flaretune.train.flow import LocalTraining


def test_warmup_then_linear_decay_factors():
    factor = loop.lr_factor("linear", warmup_steps=2, total_steps=6)
    assert [factor(s) for s in range(7)] == [1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25, 0.0]
    constant = loop.lr_factor("constant", warmup_steps=1, total_steps=4)
    assert [constant(s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"learning_rate": 0}, "learning_rate must be > 0"),
    ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\)"),
    ({"schedule": "cosine"}, "Invalid lr schedule 'cosine'; valid: constant, linear"),
])
def test_bad_step_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        loop.BackpropStep(**kwargs)


def test_unknown_step_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="Invalid train_step 'zo'; valid: backprop, fedprox, dpsgd"):
        loop.make_step("zo")


def test_the_servers_mu_turns_backprop_into_fedprox():
    settings = LocalTraining(learning_rate=0.01, warmup_ratio=0.1, schedule="linear")
    assert type(settings.step()) is loop.BackpropStep
    step = settings.step(fedprox_mu=0.5)
    assert type(step) is loop.FedProxStep and step.mu == 0.5 and step.learning_rate == 0.01


class Quadratic:
    """A module with one parameter whose loss is ``(w - 3)^2`` for any batch."""

    def __init__(self):
        import torch

        self.w = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return [self.w]

    def train(self):
        pass

    def __call__(self, input_ids, attention_mask, labels):
        from types import SimpleNamespace

        return SimpleNamespace(loss=((self.w - 3.0) ** 2).sum())


class Record:
    def __init__(self, n):
        self.input_ids, self.labels = [1] * n, [0] * n


def test_fedprox_adds_mu_half_squared_distance_to_the_start():
    import torch

    module = Quadratic()
    step = loop.FedProxStep(mu=2.0, learning_rate=0.1)
    step.start(module, module.parameters(), total_steps=1)
    with torch.no_grad():
        module.w.fill_(1.0)
    assert float(step.extra_loss().detach()) == pytest.approx(0.5 * 2.0 * 1.0 ** 2)


def test_run_counts_steps_stops_on_request_and_records_losses():
    module = Quadratic()
    records = [Record(3) for _ in range(5)]
    result = loop.run(module, records, 0, loop.BackpropStep(learning_rate=0.1), epochs=2, batch_size=2)
    assert result.steps == 6 and result.examples == 10 and len(result.losses) == 6
    assert result.losses[0] == 9.0 and result.losses[-1] < result.losses[0]  # (0 - 3)^2, then downhill
    calls = []
    stopped = loop.run(Quadratic(), records, 0, loop.BackpropStep(), max_steps=4,
                       should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert stopped.aborted and stopped.steps == 2


def test_the_schedule_spans_every_round_of_the_job():
    """Round 1 of 2 continues where round 0's schedule ended: one warm-up, one decay, as a centralized run has."""
    rounds = []
    for index in range(2):
        module = Quadratic()
        step = loop.BackpropStep(learning_rate=1.0, warmup_ratio=0.25, schedule="linear", round_index=index,
                                 num_rounds=2)
        step.start(module, module.parameters(), total_steps=4)
        lrs = []
        for _ in range(4):
            lrs.append(step.optimizer.param_groups[0]["lr"])
            step(module, (None, None, None))
        rounds.append(lrs)
    whole = loop.lr_factor("linear", warmup_steps=2, total_steps=8)
    assert rounds[0] + rounds[1] == pytest.approx([whole(s) for s in range(8)])
    with pytest.raises(ConfigError, match="round_index must be in"):
        loop.BackpropStep(round_index=2, num_rounds=2)
