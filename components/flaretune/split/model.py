"""A token classifier cut in three for split learning: site bottom, server middle, site top (no FLARE).

FL-GLM (Zhang et al., 2024, arXiv:2406.14898) keeps the embeddings, the first block, the last block and
the head at the client and runs the blocks in between on the server, so neither the raw text nor the
labels nor the embedding gradients leave the site. FL-LLaMA (arXiv:2505.15683) adds Gaussian noise to
the hidden states the client sends (``sigma`` here) and serves several clients in one server batch.

The three parts are views of one (PEFT) model: they share its parameters, so the assembled model is
exactly that model, and the union of the parts' adapter tensors is :func:`flaretune.models.lora.adapter_state`.
What trains is what the job's :class:`~flaretune.models.lora.PeftSpec` makes trainable (LoRA on the
attention projections, the new head), each side with its own AdamW; nothing else changes, so one split
step equals one unsplit step on the same batch (see tests/split/test_model.py).

Cuts: ``bottom_layers`` blocks after the embeddings stay at the site, then the server's blocks, then
``top_layers`` blocks, the dropout and the classifier back at the site. The 0/1 attention mask travels
with the activations; each side builds the same additive mask from it as ``BertModel`` does.
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

from flaretune.errors import ConfigError

SITE, SERVER = "site", "server"


def _inner(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _attention_mask(config, hidden, mask):
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=mask)


def _run_blocks(blocks, config, hidden, mask):
    extended = _attention_mask(config, hidden, mask)
    for block in blocks:
        hidden = block(hidden, extended)
    return hidden


def _module_base():
    import torch

    return torch.nn.Module


class SiteBottom(_module_base()):
    """Embeddings and the first ``k`` blocks: token ids and mask -> hidden states at the lower cut."""

    def __init__(self, bert, k: int):
        super().__init__()
        import torch

        self.config = bert.config
        self.embeddings = bert.embeddings
        self.blocks = torch.nn.ModuleList(list(bert.encoder.layer[:k]))

    def forward(self, input_ids, attention_mask):
        return _run_blocks(self.blocks, self.config, self.embeddings(input_ids=input_ids), attention_mask)


class ServerMiddle(_module_base()):
    """Blocks ``k .. n-m``: hidden states at the lower cut -> hidden states at the upper cut."""

    def __init__(self, bert, k: int, m: int):
        super().__init__()
        import torch

        self.config = bert.config
        n = len(bert.encoder.layer)
        self.blocks = torch.nn.ModuleList(list(bert.encoder.layer[k:n - m]))

    def forward(self, hidden, attention_mask):
        return _run_blocks(self.blocks, self.config, hidden, attention_mask)


class SiteTop(_module_base()):
    """The last ``m`` blocks, dropout and head: hidden states at the upper cut -> logits (and the loss)."""

    def __init__(self, classifier_model, m: int):
        super().__init__()
        import torch

        bert = classifier_model.bert
        self.config = bert.config
        self.num_labels = classifier_model.num_labels
        n = len(bert.encoder.layer)
        self.blocks = torch.nn.ModuleList(list(bert.encoder.layer[n - m:]))
        self.dropout = classifier_model.dropout
        self.classifier = classifier_model.classifier

    def forward(self, hidden, attention_mask, labels=None):
        import torch

        logits = self.classifier(self.dropout(_run_blocks(self.blocks, self.config, hidden, attention_mask)))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return loss, logits


@dataclass
class SplitParts:
    bottom: SiteBottom
    middle: ServerMiddle
    top: SiteTop


def check_cut(n_layers: int, bottom_layers: int, top_layers: int) -> None:
    if bottom_layers < 0 or top_layers < 0:
        raise ConfigError(f"bottom_layers and top_layers must be >= 0, got {bottom_layers} and {top_layers}")
    if bottom_layers + top_layers >= n_layers:
        raise ConfigError(f"bottom_layers + top_layers must leave the server at least one of the model's "
                          f"{n_layers} blocks, got {bottom_layers} + {top_layers}")


def split_token_classifier(model, bottom_layers: int = 1, top_layers: int = 1) -> SplitParts:
    """Cut a BERT token classifier (plain or PEFT-wrapped) into parts that share its parameters."""
    inner = _inner(model)
    if not hasattr(inner, "bert") or not hasattr(inner, "classifier"):
        raise ConfigError(f"split learning needs a BERT token classifier, got {type(inner).__name__}")
    check_cut(len(inner.bert.encoder.layer), bottom_layers, top_layers)
    return SplitParts(SiteBottom(inner.bert, bottom_layers), ServerMiddle(inner.bert, bottom_layers, top_layers),
                      SiteTop(inner, top_layers))


def layer_index(name: str):
    """The encoder block a parameter name belongs to (``...encoder.layer.3.attention...`` -> 3), else None."""
    marker = "encoder.layer."
    at = name.find(marker)
    if at < 0:
        return None
    return int(name[at + len(marker):].split(".", 1)[0])


def side_of(name: str, n_layers: int, bottom_layers: int, top_layers: int) -> str:
    """``"server"`` for a tensor of the middle blocks, ``"site"`` for everything else (embeddings, edge
    blocks, head)."""
    i = layer_index(name)
    return SERVER if i is not None and bottom_layers <= i < n_layers - top_layers else SITE


def partition(params: Dict[str, object], n_layers: int, bottom_layers: int,
              top_layers: int) -> Tuple[Dict[str, object], Dict[str, object]]:
    """(site tensors, server tensors) of a state dict such as :func:`~flaretune.models.lora.adapter_state`."""
    site, server = {}, {}
    for name, value in params.items():
        (server if side_of(name, n_layers, bottom_layers, top_layers) == SERVER else site)[name] = value
    return site, server


def trainable(module) -> List:
    return [p for p in module.parameters() if p.requires_grad]


def drop_middle(model, bottom_layers: int, top_layers: int) -> None:
    """Free the server's blocks in a site's copy of the model (each becomes an empty module, so the other
    blocks keep their names): the site then holds only embeddings, edge blocks and head."""
    import torch

    layers = _inner(model).bert.encoder.layer
    check_cut(len(layers), bottom_layers, top_layers)
    for i in range(bottom_layers, len(layers) - top_layers):
        layers[i] = torch.nn.Module()


def load_part(model, params: Dict[str, object]) -> None:
    """Load the adapter tensors a part holds (a site's after :func:`drop_middle`): every one, nothing else."""
    import torch
    from peft import set_peft_model_state_dict

    from flaretune.models.lora import adapter_state

    expected = adapter_state(model)
    if set(expected) != set(params):
        missing, unexpected = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
        raise ConfigError(f"client-part tensors do not match the model's cut: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]} (bottom_layers/top_layers differ between server and site?)")
    tensors = {}
    for name, ref in expected.items():
        tensor = torch.as_tensor(params[name])
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ConfigError(f"client-part tensor {name}: shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}")
        tensors[name] = tensor.to(ref.dtype)
    set_peft_model_state_dict(model, tensors)
