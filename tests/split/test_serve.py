"""Client batching: one middle step for several sites gives each site exactly its own gradients, and a
site that leaves or goes silent does not stop the others."""

import threading

import pytest

torch = pytest.importorskip("torch")

from flaretune.models.lora import PeftSpec  # noqa: E402
from flaretune.split.model import split_token_classifier  # noqa: E402
from flaretune.split.serve import SiteDropped, StepBatcher  # noqa: E402
from flaretune.split.steps import MiddleServer  # noqa: E402

SPEC = PeftSpec(model_name="tiny-minilm-ner", labels=["O", "B-X", "I-X"], lora_r=4, seed=5)


def _middle():
    parts = split_token_classifier(SPEC.build(), 1, 0)
    parts.middle.eval()  # no dropout: batched and serial see the same function
    return parts.middle


def _site_batch(seed, batch, width, real):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, width, 32, generator=g)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for row, n in enumerate(real):
        mask[row, :n] = 1
    return hidden, mask, torch.randn(batch, width, 32, generator=g)


def _grads(middle):
    return {n: p.grad.clone() for n, p in middle.named_parameters() if p.requires_grad}


def test_batched_middle_step_equals_serial_per_site():
    sites = [_site_batch(1, 2, 7, [7, 4]), _site_batch(2, 3, 5, [5, 5, 2])]
    serial = []
    for hidden, mask, grad in sites:
        server = MiddleServer(_middle(), learning_rate=1e-3)
        (out,) = server.forward([(hidden, mask)])
        (lower,) = server.backward([grad[:, : hidden.shape[1]]])
        serial.append((out, lower, _grads(server.middle)))
    batched = MiddleServer(_middle(), learning_rate=1e-3)
    outs = batched.forward([(h, m) for h, m, _ in sites])
    lowers = batched.backward([g for _, _, g in sites])
    for (out, lower, _), got_out, got_lower, (h, _, _) in zip(serial, outs, lowers, sites):
        assert got_out.shape == h.shape and got_lower.shape == h.shape
        torch.testing.assert_close(got_out, out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_lower, lower, atol=1e-5, rtol=1e-5)
    got = _grads(batched.middle)
    assert got and set(got) == set(serial[0][2])
    for name in got:  # the middle's gradient is the sum of the sites' (their losses add up)
        torch.testing.assert_close(got[name], serial[0][2][name] + serial[1][2][name], atol=1e-5, rtol=1e-4)


def test_a_site_that_left_counts_zero():
    sites = [_site_batch(1, 2, 7, [7, 4]), _site_batch(2, 3, 5, [5, 5, 2])]
    alone = MiddleServer(_middle())
    alone.forward([sites[0][:2]])
    alone.backward([sites[0][2]])
    both = MiddleServer(_middle())
    both.forward([(h, m) for h, m, _ in sites])
    both.backward([sites[0][2], None])
    for name, grad in _grads(alone.middle).items():
        torch.testing.assert_close(_grads(both.middle)[name], grad, atol=1e-5, rtol=1e-4)


def _site_thread(batcher, name, steps, errors, leave_after=None, silent_after=None):
    def run():
        try:
            for step in range(steps):
                if silent_after is not None and step == silent_after:
                    return
                if leave_after is not None and step == leave_after:
                    batcher.leave(name)
                    return
                hidden, mask, grad = _site_batch(step, 2, 4, [4, 3])
                upper = batcher.forward(name, hidden, mask)
                assert upper.shape == hidden.shape
                lower = batcher.backward(name, grad)
                assert lower.shape == hidden.shape
        except Exception as err:  # noqa: BLE001 - reported to the test
            errors[name] = err

    return threading.Thread(target=run)


def _serve(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)


def test_sites_are_served_together_and_one_leaving_mid_epoch_stops_no_one():
    batcher = StepBatcher(MiddleServer(_middle()), site_timeout=30)
    batcher.begin(["site-1", "site-2", "site-3"])
    errors = {}
    _serve([_site_thread(batcher, "site-1", 4, errors), _site_thread(batcher, "site-2", 4, errors),
            _site_thread(batcher, "site-3", 4, errors, leave_after=1)])
    assert errors == {}
    assert batcher.group_sizes == [3, 2, 2, 2]
    assert batcher.active == {"site-1", "site-2"}


def test_a_silent_site_is_dropped_after_the_timeout_and_refused_afterwards():
    batcher = StepBatcher(MiddleServer(_middle()), site_timeout=0.5)
    batcher.begin(["site-1", "site-2"])
    errors = {}
    _serve([_site_thread(batcher, "site-1", 3, errors), _site_thread(batcher, "site-2", 3, errors, silent_after=1)])
    assert errors == {}
    assert batcher.group_sizes == [2, 1, 1] and batcher.dropped == {"site-2"}
    hidden, mask, _ = _site_batch(0, 1, 4, [4])
    with pytest.raises(SiteDropped, match="site-2 is not training in this round"):
        batcher.forward("site-2", hidden, mask)
