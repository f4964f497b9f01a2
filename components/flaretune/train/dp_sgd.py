"""Record-level DP-SGD as a train step: ``"train_step": "dpsgd"`` (Abadi et al., 2016, arXiv:1607.00133).

Each step, on the trainable parameters (LoRA matrices and the task head; the frozen base never gets a
gradient):

1. **Poisson sampling.** Every record of the site is in the step's lot independently with probability
   ``sample_rate`` (q), drawn from a CSPRNG-seeded generator — the sampling the RDP and PRV accountants
   of :mod:`flaretune.privacy` analyse. The loop must therefore hand the step the *whole* dataset as one
   batch (``batch_size`` ≥ ``dataset_size``); a batch of any other size is refused, because sampling from
   a fixed shuffled slice is not what the accountant assumes. The lot size varies; its mean is q·N.
2. **Per-example gradients** of each sampled record's own loss (the module's ``.loss`` on that record
   alone, padding stripped): one backward pass per record via ``torch.autograd.grad`` on the parameters
   the module holds at :meth:`DPSGDStep.start`, fetched afresh every round — so no stale reference can
   keep the adapter frozen while ε grows. A record without supervised tokens contributes zero.
3. **Clip** each example's gradient to ``max_grad_norm`` (C) over all parameters together, **sum**, add
   N(0, (z·C)²) per coordinate, **divide by the expected lot size** q·N (Opacus's convention, so the noise
   scale does not depend on the realised lot size).
4. **AdamW** (or the step's learning-rate schedule) on that gradient: post-processing, no extra privacy cost.

:attr:`DPSGDStep.steps_taken` counts the steps; :meth:`DPSGDStep.accounting` gives the
``(noise_multiplier, sample_rate, steps)`` entry for an accountant (Mironov, 2017, arXiv:1702.07476).
Steps per round are ``max_steps`` (or ``local_epochs``, one step per pass of the loop); one epoch of data
is about 1/q steps. Per-example passes cost up to a lot's size times a batched pass: that is the price of
exactness with any module (HF attention masks and boolean indexing do not run under ``vmap``).
"""

import math
from typing import List, Tuple

from flaretune.errors import ConfigError
from flaretune.ops.dp import check_dp_args, clip_and_sum_per_sample, secure_torch_generator
from flaretune.train.loop import BackpropStep, register_step


class DPSGDStep(BackpropStep):
    """DP-SGD with Poisson sampling at ``sample_rate`` over ``dataset_size`` records; see the module docstring.

    Args:
        noise_multiplier: z, noise std in units of ``max_grad_norm``.
        max_grad_norm: C, the per-example clipping bound.
        sample_rate: q, the probability each record is in a step's lot.
        dataset_size: N, the site's training record count; every batch must hold exactly N rows.
        Other arguments as :class:`~flaretune.train.loop.BackpropStep` (learning rate, schedule, decay).
    """

    name = "dpsgd"

    def __init__(self, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0, sample_rate: float = 0.01,
                 dataset_size: int = 0, **kwargs):
        try:
            check_dp_args(noise_multiplier, max_grad_norm, "dpsgd", clip_name="max_grad_norm")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0 < sample_rate <= 1:
            raise ConfigError(f"sample_rate for dpsgd must be in (0, 1], got {sample_rate!r}")
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
            raise ConfigError(f"dataset_size for dpsgd must be the site's record count (an int >= 1), "
                              f"got {dataset_size!r}")
        super().__init__(max_grad_norm=max_grad_norm, **kwargs)
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.dataset_size = dataset_size
        self.steps_taken = 0
        self.generator = None  # set in start(); tests may replace it with a seeded one after start()
        self._named: List[Tuple[str, object]] = []

    def start(self, module, params, total_steps):
        super().start(module, params, total_steps)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if {id(p) for _, p in named} != {id(p) for p in params} or not named:
            raise ConfigError("dpsgd: the trainable parameters the loop passed are not the module's own")
        self._named = named
        self.generator = secure_torch_generator(named[0][1].device)

    def accounting(self) -> Tuple[float, float, int]:
        """``(noise_multiplier, sample_rate, steps_taken)``, an accountant's history entry."""
        return self.noise_multiplier, self.sample_rate, self.steps_taken

    def per_sample_grads(self, module, ids, mask, labels):
        """``(grads, losses)``: one ``[B, *shape]`` tensor per trainable parameter, each record's own loss."""
        import torch

        params = [p for _, p in self._named]
        grads = [torch.zeros((ids.shape[0],) + tuple(p.shape), dtype=p.dtype, device=p.device) for p in params]
        losses = torch.full((ids.shape[0],), float("nan"))
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())  # right padding (loop.batches): the first n positions are the record
            loss = module(input_ids=ids[b:b + 1, :n], attention_mask=mask[b:b + 1, :n], labels=labels[b:b + 1, :n]).loss
            if not bool(torch.isfinite(loss)):  # no supervised token: the record adds nothing
                continue
            for out, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    out[b] = g
            losses[b] = float(loss.detach())
        return grads, losses

    def __call__(self, module, batch) -> float:
        import torch

        ids, mask, labels = batch
        if ids.shape[0] != self.dataset_size:
            raise ConfigError(f"dpsgd samples each record of the site's {self.dataset_size} with probability "
                              f"sample_rate at every step, so each batch must be the whole dataset: got a batch of "
                              f"{ids.shape[0]}; set batch_size >= {self.dataset_size}")
        z, clip, q, n = self.noise_multiplier, self.max_grad_norm, self.sample_rate, self.dataset_size
        # 1. Poisson sampling of the lot
        chosen = (torch.rand(n, generator=self.generator, device=self.generator.device) < q).nonzero().flatten()
        chosen = chosen.to(ids.device)
        params = [p for _, p in self._named]
        if chosen.numel():
            # 2.-3. per-example gradients, clipped and summed
            per_sample, losses = self.per_sample_grads(module, ids[chosen], mask[chosen], labels[chosen])
            summed, _ = clip_and_sum_per_sample(per_sample, clip)
            finite = losses[torch.isfinite(losses)]
            loss = float(finite.mean()) if finite.numel() else math.nan
        else:  # an empty lot: the update is noise alone, and the step still counts
            summed, loss = [torch.zeros_like(p) for p in params], math.nan
        # 3. Gaussian noise on the sum, then the mean over the expected lot size
        for p, s in zip(params, summed):
            noise = torch.normal(0.0, z * clip, size=tuple(p.shape), generator=self.generator,
                                 device=self.generator.device, dtype=p.dtype)
            p.grad = (s + noise.to(p.device)) / (q * n)
        # 4. the optimizer step on the private gradient
        self.optimizer.step()
        self.scheduler.step()
        self.steps_taken += 1
        return loss


register_step(DPSGDStep.name, DPSGDStep)
