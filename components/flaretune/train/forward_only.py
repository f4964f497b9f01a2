"""Forward-only LoRA training (FwdLLM, Xu et al., ATC'24, arXiv:2308.13894): ``"method": "forward_only"``.

A site with no memory for a backward pass estimates the gradient of its LoRA tensors (and the task head)
from perturbed forward passes only, under ``torch.no_grad`` — no autograd graph, no stored activations.
Per step: K directions z_k (:mod:`flaretune.ops.zo`: seeded, antithetic central differences averaged over
K, optionally FwdLLM's selection of the candidate most aligned with the previous estimate), 2K forward
passes, then plain SGD on the estimate, as FwdLLM does. Dropout is off during the passes (``module.eval()``)
so that L(w + eps z) and L(w - eps z) see the same network.

Shared-seed mode: every direction is drawn from a seed derived from the job seed, the round, the step and
the perturbation index, so what a site must send is its K float32 projections per step
(:meth:`ForwardOnlyStep.upload`); :func:`flaretune.ops.zo.replay` rebuilds the site's adapter from the
round's global adapter bit for bit. The method's ``exchange`` is ``"lora"``: the server keeps plain LoRA,
and today the executors still send the adapter itself; the projections' bytes are measured by
``flaretune bench forward-only`` (``upload_bytes``).
"""

from typing import Dict, List, Optional

from flaretune.errors import ConfigError
from flaretune.ops import zo
from flaretune.train.loop import TrainStep, register_step
from flaretune.train.methods import LoraMethod


def _positive(name: str, value, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or (kind is int and int(value) != value):
        expected = "an int >= 1" if kind is int else "a number > 0"
        raise ConfigError(f"forward_only {name} must be {expected}, got {value!r}")
    return kind(value)


class ForwardOnlyStep(TrainStep):
    """Zeroth-order SGD on the trainable tensors; see the module docstring.

    Args:
        learning_rate: SGD step size on the estimate.
        perturbations: K, directions per step (2K forward passes).
        epsilon: perturbation scale of the central difference.
        candidates: FwdLLM selection: directions drawn per slot, the most aligned with the previous
            estimate kept (1: off).
        seed: the job seed the directions derive from; ``round_index``/``site`` complete the derivation.
    """

    name = "forward_only"

    def __init__(self, learning_rate: float = 1e-3, perturbations: int = 4, epsilon: float = 1e-3,
                 candidates: int = 1, seed: int = 0, round_index: int = 0, num_rounds: int = 1, site: int = 0):
        self.learning_rate = _positive("learning_rate", learning_rate)
        self.perturbations = _positive("perturbations", perturbations, int)
        self.epsilon = _positive("epsilon", epsilon)
        self.candidates = _positive("candidates", candidates, int)
        self.seed, self.site = int(seed), int(site)
        if not 0 <= round_index < max(1, num_rounds):
            raise ConfigError(f"round_index must be in [0, num_rounds), got {round_index} of {num_rounds}")
        self.round_index, self.num_rounds = round_index, max(1, num_rounds)
        self.params: List = []
        self.projections: List[List[float]] = []
        self.last_estimate: Optional[List] = None

    def start(self, module, params, total_steps):
        self.params = list(params)
        self.projections = []
        self.last_estimate = None

    def _loss(self, module, batch) -> float:
        ids, mask, labels = batch
        return float(module(input_ids=ids, attention_mask=mask, labels=labels).loss)

    def gradient_estimate(self, module, batch):
        """``(g, projections, mean loss)`` at the current parameters, which it leaves as they were."""
        import torch

        step_index = len(self.projections)
        shapes = [tuple(p.shape) for p in self.params]
        module.eval()  # no dropout: both sides of a difference see the same network
        dirs, projections, losses = [], [], []
        with torch.no_grad():
            base = [p.detach().clone() for p in self.params]
            for k in range(self.perturbations):
                z = zo.choose_direction(shapes, self.seed, self.round_index, step_index, k, self.candidates,
                                        self.last_estimate, self.site)
                signed = []
                for sign in (1.0, -1.0):
                    for p, b, t in zip(self.params, base, z):
                        p.copy_(b + (sign * self.epsilon) * t.to(device=p.device, dtype=p.dtype))
                    signed.append(self._loss(module, batch))
                for p, b in zip(self.params, base):
                    p.copy_(b)
                dirs.append(z)
                projections.append(zo.projection(signed[0], signed[1], self.epsilon))
                losses.extend(signed)
        return zo.estimate(dirs, projections), projections, sum(losses) / len(losses)

    def __call__(self, module, batch) -> float:
        grad, projections, loss = self.gradient_estimate(module, batch)
        zo.sgd_update(self.params, grad, self.learning_rate)
        self.projections.append(projections)
        self.last_estimate = grad
        return loss

    def upload(self) -> Dict[str, object]:
        """What a site sends in shared-seed mode: its projections (steps x K float32) and their derivation."""
        import numpy as np

        return {"projections": np.asarray(self.projections, dtype=np.float32), "seed": self.seed,
                "round_index": self.round_index, "site": self.site, "learning_rate": self.learning_rate,
                "candidates": self.candidates}


register_step(ForwardOnlyStep.name, ForwardOnlyStep)


class ForwardOnlyMethod(LoraMethod):
    """LoRA tensors trained by :class:`ForwardOnlyStep`; the server aggregates plain LoRA (``exchange``).

    ``method_args``: ``learning_rate`` (SGD, default 1e-3; the job's AdamW rate does not carry over to
    zeroth-order SGD), ``perturbations`` (K, 4), ``epsilon`` (1e-3), ``candidates`` (1: no selection).
    """

    name = "forward_only"
    exchange = "lora"

    def __init__(self, spec, learning_rate: float = 1e-3, perturbations: int = 4, epsilon: float = 1e-3,
                 candidates: int = 1):
        super().__init__(spec)
        self.options = dict(learning_rate=learning_rate, perturbations=perturbations, epsilon=epsilon,
                            candidates=candidates)
        ForwardOnlyStep(**self.options)  # validate now, at construction

    def step(self, step):
        """The job's step only lends its round position; the update is always forward-only SGD. A job step
        that changes the update (DP-SGD's clipping and noise, FedProx's proximal term) is refused rather than
        dropped: a site must not train without the privacy the job asked for."""
        name = getattr(step, "name", "backprop")
        if name != "backprop":
            raise ConfigError(f"method 'forward_only' trains with its own zeroth-order SGD and cannot apply the "
                              f"job's train step {name!r}; use method 'lora' for {name}")
        return ForwardOnlyStep(seed=self.spec.seed, round_index=getattr(step, "round_index", 0),
                               num_rounds=getattr(step, "num_rounds", 1), **self.options)
