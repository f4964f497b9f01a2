"""One split-learning step, as each side runs it (no FLARE, no threads).

Per batch (FL-GLM, arXiv:2406.14898, Fig. 2):

1. site: bottom forward -> hidden states at the lower cut, optionally plus N(0, sigma^2) noise
   (FL-LLaMA, arXiv:2505.15683) -> sent with the 0/1 attention mask;
2. server: middle forward -> hidden states at the upper cut, returned;
3. site: top forward, loss, backward -> gradient at the upper cut, sent;
4. server: backward through the middle, AdamW step -> gradient at the lower cut, returned;
5. site: backward into the bottom, AdamW step over bottom and top.

The noise is added to what is sent only; the returned gradient is applied to the un-noised activations
(the noise is an additive constant of the server's input, so its gradient is the same tensor).
:class:`MiddleServer` serves several sites in one forward/backward (FL-LLaMA's client batching): their
activations are padded to one width (mask 0 on the padding) and stacked; each row of the middle depends
only on its own row, so each site gets back exactly its own gradient, and the middle's parameter gradient
is the sum of the sites' (tests/split/test_steps.py).
"""

from typing import List, Optional, Sequence, Tuple

from flaretune.errors import ConfigError
from flaretune.split.model import trainable


def _adamw(params, learning_rate: float, weight_decay: float):
    import torch

    if not learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0, got {learning_rate}")
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay) if params else None


def _unique(params) -> List:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class SiteSide:
    """The site's bottom and top with one AdamW over their trainable parameters."""

    def __init__(self, bottom, top, learning_rate: float = 1e-3, sigma: float = 0.0, seed: int = 0,
                 weight_decay: float = 0.0):
        import torch

        if not sigma >= 0:
            raise ConfigError(f"noise sigma must be >= 0, got {sigma}")
        self.bottom, self.top, self.sigma = bottom, top, float(sigma)
        self.params = _unique(trainable(bottom) + trainable(top))
        self.optimizer = _adamw(self.params, learning_rate, weight_decay)
        self._noise = torch.Generator().manual_seed(seed)
        self._lower = None

    def train(self, mode: bool = True) -> None:
        self.bottom.train(mode)
        self.top.train(mode)

    def forward(self, input_ids, attention_mask):
        """Step 1: the (noised) activations at the lower cut, detached: what leaves the site."""
        import torch

        self._lower = self.bottom(input_ids, attention_mask)
        sent = self._lower.detach()
        if self.sigma > 0:
            sent = sent + self.sigma * torch.randn(sent.shape, generator=self._noise, dtype=sent.dtype)
        return sent

    def top_backward(self, upper, attention_mask, labels) -> Tuple[float, object]:
        """Step 3: loss of the batch and the gradient at the upper cut (what leaves the site)."""
        upper = upper.detach().requires_grad_(True)
        loss, _ = self.top(upper, attention_mask, labels)
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return float(loss.detach()), upper.grad.detach()

    def finish(self, lower_grad) -> None:
        """Step 5: backward into the bottom with the server's gradient, then one update of both parts."""
        if self._lower is not None and self._lower.requires_grad:
            self._lower.backward(lower_grad)
        self._lower = None
        if self.optimizer is not None:
            self.optimizer.step()

    def predict_logits(self, input_ids, attention_mask, middle):
        """Logits of the whole split model in process (evaluation; ``middle`` is a callable)."""
        lower = self.bottom(input_ids, attention_mask)
        return self.top(middle(lower, attention_mask), attention_mask)[1]


def stack(items: Sequence[Tuple[object, object]]):
    """Pad ``(hidden [B, T, H], mask [B, T])`` pairs to the widest T and concatenate them: (hidden, mask, rows)."""
    import torch

    width = max(h.shape[1] for h, _ in items)
    hiddens, masks, rows, start = [], [], [], 0
    for hidden, mask in items:
        b, t = hidden.shape[0], hidden.shape[1]
        hiddens.append(torch.nn.functional.pad(hidden, (0, 0, 0, width - t)))
        masks.append(torch.nn.functional.pad(mask, (0, width - t)))
        rows.append((start, start + b, t))
        start += b
    return torch.cat(hiddens), torch.cat(masks), rows


class MiddleServer:
    """The server's blocks with their AdamW; one :meth:`forward` and one :meth:`backward` per group of sites."""

    def __init__(self, middle, learning_rate: float = 1e-3, weight_decay: float = 0.0):
        self.middle = middle
        self.params = _unique(trainable(middle))
        self.optimizer = _adamw(self.params, learning_rate, weight_decay)
        self._input = self._output = None
        self._rows: List = []

    def forward(self, items: Sequence[Tuple[object, object]]) -> List:
        """Step 2 for every site of the group: their upper-cut activations, in order."""
        hidden, mask, self._rows = stack(items)
        self._input = hidden.detach().requires_grad_(True)
        self._output = self.middle(self._input, mask)
        return [self._output[a:b, :t].detach() for a, b, t in self._rows]

    def backward(self, grads: Sequence[Optional[object]]) -> List:
        """Step 4: backward with each site's upper-cut gradient (``None``: the site left; its rows count
        zero), one update; the lower-cut gradients, in order."""
        import torch

        if self._output is None:
            raise RuntimeError("MiddleServer.backward before forward")
        full = torch.zeros_like(self._output)
        for (a, b, t), grad in zip(self._rows, grads):
            if grad is not None:
                full[a:b, :t] = grad
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self._output.backward(full)
        if self.optimizer is not None:
            self.optimizer.step()
        out = [self._input.grad[a:b, :t].detach() for a, b, t in self._rows]
        self._input = self._output = None
        return out
