"""Client methods by name: which parameters train, which tensors travel, and (optionally) the train step.

A job picks one with ``"method"`` (and ``"layers"``, ``"method_args"``) in its :class:`~flaretune.models.lora.PeftSpec`:
the server's ``PeftAdapterPersistor`` owns the spec and sends it with every task, so the server's global model
and every site's upload always hold the same tensors. ``flaretune compare JOB --method NAME [--layers ...]``
sets it. Built in:

* ``lora`` (default, today's behaviour): LoRA adapters on ``target_modules`` plus the task head train and travel
  (Hu et al., 2021, arXiv:2106.09685). With ``layers``: adapters only on those layers (PEFT ``layers_to_transform``).
* ``full``: every weight trains and travels (with ``layers``: only those layers' weights and the head).
* ``layer_skip``: layer-skipping fine-tuning (Zhang & Li, 2025): only the selected transformer layers' full
  weights (and the task head) train and travel, the rest stay frozen; ``layers`` is required
  (:func:`flaretune.train.layer_select.select_layers`). LoRA on the selected layers only is ``lora`` + ``layers``.
* ``ffa_lora``: FFA-LoRA (Sun et al., ICLR 2024, arXiv:2403.12313): every LoRA A stays at its initialisation,
  which every site and the server draw from the job's ``seed`` (not the site's), and only B (and the head)
  trains and travels. With A shared and fixed, the mean of the sites' B times A is exactly the mean of their
  products B·A, and the adapter upload halves.
* ``forward_only`` (:mod:`flaretune.train.forward_only`): LoRA trained from perturbed forward passes only
  (FwdLLM, arXiv:2308.13894), no backward pass; exchanges plain LoRA.
* ``qlora`` (:mod:`flaretune.models.qlora`): LoRA on an NF4, double-quantized frozen base (arXiv:2305.14314);
  exchanges plain LoRA.

Contract for a new method (``register_method("name", factory)``):

* ``factory(spec, **options) -> ClientMethod``; ``options`` are ``spec.method_args``. ``factory`` may be a
  ``"module:attr"`` string, imported only when the method is made (heavy imports such as bitsandbytes stay lazy).
  Validate options in ``__init__`` and raise :class:`~flaretune.errors.ConfigError` with one line naming the field.
* Subclass :class:`ClientMethod` (or :class:`LoraMethod` to keep LoRA's tensors) and override what differs:
  ``build(base_dir)`` returns the model with ``requires_grad`` True exactly on the trainable parameters;
  ``get_params(model)`` the traveling tensors (detached CPU copies, keyed by name); ``set_params(model, params)``
  loads them (a missing, unexpected or misshapen tensor is a ConfigError); ``step(step)`` returns the
  :class:`~flaretune.train.loop.TrainStep` to train with, given the job's (backprop, FedProx or DP-SGD) — a
  forward-only method returns its own step there; the loop calls ``step.start(module, trainable_params, total)``
  once per round and ``step(module, batch) -> loss`` per batch.
* ``exchange``: the registered method whose ``build``/``get_params`` define the global model on the server
  (default: the method itself). A method that trains the same tensors differently (a forward-only step, a
  4-bit base) sets ``exchange = "lora"``: the server then builds plain LoRA, and a site may run it in a job
  whose method is ``lora`` (the executor's ``method`` argument), as sites with less memory would.

No FLARE import here; torch and PEFT are imported when a method builds or moves tensors.
"""

import importlib
from typing import Callable, Dict, List, Union

from flaretune.errors import ConfigError
from flaretune.train.layer_select import layer_of, num_layers_of, select_layers

DEFAULT_METHOD = "lora"
_HEADS = ("classifier.", "score.")  # token-classification heads: new, so they train whatever the method


class ClientMethod:
    """Base class: what a site trains and sends. Subclasses override :meth:`build` and the exchange."""

    name = ""
    exchange = ""  # "" → the method itself

    def __init__(self, spec, **options):
        if options:
            raise ConfigError(f"method {self.name!r} takes no method_args, got {sorted(options)}")
        self.spec = spec

    def build(self, base_dir=None):
        raise NotImplementedError

    def get_params(self, model) -> Dict[str, "object"]:
        return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}

    def set_params(self, model, params: Dict[str, "object"]) -> None:
        import torch

        own = dict(model.named_parameters())
        tensors = _checked(self.get_params(model), params)
        with torch.no_grad():
            for name, tensor in tensors.items():
                own[name].copy_(tensor)

    def step(self, step):
        return step

    def layer_indices(self, model) -> List[int]:
        return select_layers(self.spec.layers, num_layers_of(model))


def _checked(expected: Dict[str, "object"], params: Dict[str, "object"]) -> Dict[str, "object"]:
    """``params`` as torch tensors in ``expected``'s dtypes, after checking names and shapes."""
    import torch

    missing, unexpected = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"tensors do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    out = {}
    for name, ref in expected.items():
        value = params[name]
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ConfigError(f"tensor {name}: shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}")
        out[name] = tensor.to(ref.dtype)
    return out


class LoraMethod(ClientMethod):
    """LoRA adapters (on ``spec.layers`` only when given) and the head train and travel."""

    name = "lora"

    def build(self, base_dir=None):
        from peft import get_peft_model

        from flaretune.models.base import load_base_model

        spec = self.spec
        base = load_base_model(spec.model_name, labels=spec.labels, seed=spec.seed, model_dir=base_dir)
        layers = self.layer_indices(base) if spec.layers not in (None, "", []) else None
        return get_peft_model(base, spec.lora_config(layers_to_transform=layers))

    def get_params(self, model):
        from flaretune.models.lora import adapter_state

        return adapter_state(model)

    def set_params(self, model, params):
        from flaretune.models.lora import load_adapter_state

        load_adapter_state(model, params)


class FfaLoraMethod(LoraMethod):
    """FFA-LoRA (arXiv:2403.12313): A frozen at the seeded initialisation, only B and the head train and travel."""

    name = "ffa_lora"

    def build(self, base_dir=None):
        model = super().build(base_dir)
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)
        return model

    def get_params(self, model):
        return {k: v for k, v in super().get_params(model).items() if ".lora_A." not in k}

    def set_params(self, model, params):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, _checked(self.get_params(model), params))


class FullMethod(ClientMethod):
    """Every weight trains and travels; with ``spec.layers`` only those layers' weights and the head."""

    name = "full"

    def build(self, base_dir=None):
        from flaretune.models.base import load_base_model

        spec = self.spec
        model = load_base_model(spec.model_name, labels=spec.labels, seed=spec.seed, model_dir=base_dir)
        if spec.layers not in (None, "", []):
            keep = set(self.layer_indices(model))
            for name, param in model.named_parameters():
                param.requires_grad_(layer_of(name) in keep or name.startswith(_HEADS))
        return model


class LayerSkipMethod(FullMethod):
    """Layer-skipping (Zhang & Li, 2025): the selected layers' weights and the head; ``layers`` is required."""

    name = "layer_skip"

    def __init__(self, spec, **options):
        super().__init__(spec, **options)
        if spec.layers in (None, "", []):
            raise ConfigError("method 'layer_skip' needs layers: an index list like '0,2', 'top2' or 'every_other'")


METHODS: Dict[str, Union[Callable, str]] = {}


def register_method(name: str, factory: Union[Callable, str]) -> None:
    """Register ``factory(spec, **options) -> ClientMethod`` (or a lazy ``"module:attr"``) under ``name``."""
    METHODS[name] = factory


def method_names() -> List[str]:
    return list(METHODS)


def validate_method(name: str, owner: str = "method") -> str:
    if name not in METHODS:
        raise ConfigError(f"Invalid {owner} {name!r}; valid: {', '.join(METHODS)}")
    return name


def _factory(name: str):
    factory = METHODS[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory


def make_method(name: str, spec, **options) -> ClientMethod:
    validate_method(name)
    return _factory(name)(spec, **options)


def method_for(spec) -> ClientMethod:
    """The spec's method with its ``method_args``."""
    return make_method(spec.method, spec, **dict(spec.method_args or {}))


def exchange_of(name: str) -> str:
    """The method whose tensors a site running ``name`` exchanges with the server (see the module docstring)."""
    validate_method(name)
    return getattr(_factory(name), "exchange", "") or name


def site_spec(spec, method: str):
    """``spec`` with a site's own ``method`` instead of the job's, when both exchange the same tensors."""
    import dataclasses

    site, job = exchange_of(method), exchange_of(spec.method)
    if site != job:
        raise ConfigError(f"method {method!r} exchanges {site!r} tensors but the job's method {spec.method!r} "
                          f"exchanges {job!r} ones: leave the executor's method empty or pick one of the same exchange")
    return dataclasses.replace(spec, method=method, method_args=None)


def server_method(spec) -> ClientMethod:
    """The method the server builds its global model with: the spec's method's exchange."""
    exchange = exchange_of(spec.method)
    return method_for(spec) if exchange == spec.method else make_method(exchange, spec)


for _cls in (LoraMethod, FullMethod, LayerSkipMethod, FfaLoraMethod):
    register_method(_cls.name, _cls)
# methods in their own modules, imported when first made (bitsandbytes stays out of a plain LoRA job)
register_method("forward_only", "flaretune.train.forward_only:ForwardOnlyMethod")  # FwdLLM, arXiv:2308.13894
register_method("qlora", "flaretune.models.qlora:QloraMethod")  # QLoRA, arXiv:2305.14314
