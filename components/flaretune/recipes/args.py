"""A job's arguments as dataclasses: one per component the job JSON configures, plus the privacy options.

Each field of a component's dataclass is one entry of that component's ``args`` in
``config_fed_server.json`` / ``config_fed_client.json``, and its default is the shipped job's value, so
``ClinicalNerRecipe()`` exports ``jobs/clinical_ner`` as checked in. ``extra`` passes any other constructor
argument of the component (``{"resume_from": "<job id>/checkpoint"}``); the recipe builds every component
when it is constructed, so a wrong name or value fails there, with the component's own message.

No FLARE or torch import here: the dataclasses are data, as the JSON is.
"""

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from flaretune.data.types import CLINICAL_NOTES_LABELS
from flaretune.errors import ConfigError


def _help(default, text: str):
    return field(default=default, metadata={"help": text})


def _listed(factory, text: str):
    return field(default_factory=factory, metadata={"help": text})


def _extra():
    return field(default_factory=dict, metadata={"help": "any other constructor argument of the component"})


@dataclass
class ComponentArgs:
    """Base of the component dataclasses: :meth:`args` is the component's ``args`` object in the job JSON."""

    def __post_init__(self):
        extra = getattr(self, "extra", {})
        if not isinstance(extra, dict):
            raise ConfigError(f"{type(self).__name__}.extra must be a dict of constructor arguments, got {extra!r}")
        shadowed = sorted(set(extra) & {f.name for f in fields(self)})
        if shadowed:
            raise ConfigError(f"{type(self).__name__}.extra repeats {shadowed}: set those fields instead")

    def args(self) -> Dict[str, Any]:
        out = {f.name: _copy(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        out.update(_copy(getattr(self, "extra", {})))
        return out


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


# -- server ------------------------------------------------------------------------------------------
@dataclass
class Rounds(ComponentArgs):
    """``flaretune.aggregation.controller.FedAggController`` (``SecAggController`` under secure aggregation)."""

    num_rounds: int = _help(10, "rounds in all")
    aggregator: str = _help("fedavg", "fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi")
    fedprox_mu: float = _help(0.0, "FedProx proximal weight (aggregator fedprox)")
    min_clients: int = _help(0, "accepted results a round needs (0: one)")
    persistor_id: str = _help("persistor", "id of the adapter persistor component")
    extra: Dict[str, Any] = _extra()


@dataclass
class Buffered(ComponentArgs):
    """``flaretune.aggregation.fedbuff.FedBuffController``: asynchronous FedBuff in place of the rounds."""

    num_updates: int = _help(10, "server updates in all")
    buffer_size: int = _help(2, "results (K) per server update")
    staleness: str = _help("sqrt", "sqrt (1/sqrt(1+s)), constant or poly")
    aggregator: str = _help("fedavg", "fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi")
    persistor_id: str = _help("persistor", "id of the adapter persistor component")
    extra: Dict[str, Any] = _extra()


@dataclass
class NerAdapter(ComponentArgs):
    """``flaretune.aggregation.persistor.PeftAdapterPersistor`` for clinical NER: base model, labels, LoRA."""

    model_name: str = _help("minilm-ner", "offline base model (flaretune.models)")
    labels: Optional[List[str]] = _listed(lambda: list(CLINICAL_NOTES_LABELS), "IOB2 tags of the head")
    lora_r: int = _help(8, "LoRA rank")
    lora_alpha: int = _help(16, "LoRA alpha")
    lora_dropout: float = _help(0.1, "LoRA dropout")
    target_modules: List[str] = _listed(lambda: ["query", "value"], "modules that get LoRA")
    seed: int = _help(0, "seed of the initial adapter")
    method: str = _help("lora", "client method (flaretune.train.methods): lora, full, layer_skip, ffa_lora, ...")
    layers: Optional[Any] = _help(None, "layers that train: '0,2', 'top2', 'every_other' (None: all)")
    extra: Dict[str, Any] = _extra()


@dataclass
class InstructAdapter(ComponentArgs):
    """``PeftAdapterPersistor`` for instruction tuning; ``task`` (how the adapter is prompted and scored) is
    filled from the training arguments when left None."""

    model_name: str = _help("smollm2-135m", "offline base model (flaretune.models)")
    labels: Optional[List[str]] = _help(None, "none: a causal LM has no head")
    lora_r: int = _help(8, "LoRA rank")
    lora_alpha: int = _help(16, "LoRA alpha")
    lora_dropout: float = _help(0.05, "LoRA dropout")
    target_modules: List[str] = _listed(lambda: ["q_proj", "v_proj"], "modules that get LoRA")
    seed: int = _help(0, "seed of the initial adapter")
    method: str = _help("lora", "client method (flaretune.train.methods): lora, full, layer_skip, ffa_lora, ...")
    layers: Optional[Any] = _help(None, "layers that train: '0,2', 'top2', 'every_other' (None: all)")
    task: Optional[Dict[str, Any]] = _help(None, "system_prompt, label_words, max_length written with the adapter")
    extra: Dict[str, Any] = _extra()


# -- sites -------------------------------------------------------------------------------------------
@dataclass
class NerTraining(ComponentArgs):
    """``flaretune.executors.peft_train.PeftTrainExecutor``: a hospital's local training."""

    data_path: str = _help("", "site data ('{site_name}' expands); empty: $FLARETUNE_DATA_DIR/<site>, else synthetic")
    local_epochs: float = _help(1, "epochs per round")
    max_steps: int = _help(0, "steps per round instead of epochs (0: epochs)")
    learning_rate: float = _help(0.002, "AdamW learning rate")
    warmup_ratio: float = _help(0.1, "linear warm-up over this share of the job's steps")
    lr_schedule: str = _help("linear", "constant or linear (decay to 0 at the last round)")
    batch_size: int = _help(16, "sentences per step")
    max_length: int = _help(64, "tokens per sentence")
    seed: int = _help(0, "seed of data order and dropout")
    send_diff: bool = _help(False, "send the update (WEIGHT_DIFF) instead of the weights")
    num_threads: int = _help(0, "torch threads (0: torch's default)")
    synthetic_sites: int = _help(3, "synthetic hospitals generated when a site has no data")
    synthetic_skew: float = _help(0.8, "specialty skew of the synthetic hospitals")
    method: str = _help("", "this site's client method instead of the job's (same exchange); empty: the job's")
    extra: Dict[str, Any] = _extra()


@dataclass
class InstructTraining(ComponentArgs):
    """``flaretune.executors.peft_causal.PeftCausalLMExecutor``: a bank's local instruction tuning."""

    data_path: str = _help("", "site data ('{site_name}' expands); empty: $FLARETUNE_DATA_DIR/<site>, else synthetic")
    local_epochs: float = _help(1, "epochs per round")
    max_steps: int = _help(8, "steps per round instead of epochs (0: epochs)")
    learning_rate: float = _help(0.002, "AdamW learning rate")
    batch_size: int = _help(8, "records per step")
    max_length: int = _help(96, "tokens per record")
    seed: int = _help(0, "seed of data order and dropout")
    send_diff: bool = _help(False, "send the update (WEIGHT_DIFF) instead of the weights")
    system_prompt: str = _help("You are a financial analyst.", "system turn of every conversation")
    eval_batch_size: int = _help(16, "records per scoring batch")
    synthetic_sites: int = _help(3, "synthetic banks generated when a site has no data")
    synthetic_alpha: float = _help(0.5, "Dirichlet label skew of the synthetic banks")
    synthetic_style: str = _help("messages", "messages (realistic) or templates")
    synthetic_train_size: int = _help(0, "training records per synthetic bank (0: the generator's default)")
    synthetic_test_size: int = _help(30, "test records per synthetic bank")
    num_threads: int = _help(1, "torch threads (0: torch's default)")
    logit_adjustment: float = _help(1.0, "tau: label-word logits offset by tau * log(site label share) in training (0: off)")
    method: str = _help("", "this site's client method instead of the job's (same exchange); empty: the job's")
    extra: Dict[str, Any] = _extra()


# -- model streaming ---------------------------------------------------------------------------------
@dataclass
class ModelPush(ComponentArgs):
    """``flaretune.streaming.controller.ModelPushController``: the folder pushed to every site."""

    model_dir: str = _help("models/base", "folder to push (relative: under the server's workspace root)")
    model_name: str = _help("base", "the sites keep it as <dest_dir>/<model_name>")
    task_name: str = _help("model_push", "task the sites' receiver handles")
    chunk_mb: float = _help(64, "chunk size in MiB: the unit of checksum, resend and resume")
    max_retries: int = _help(3, "resends of a refused or lost chunk")
    extra: Dict[str, Any] = _extra()


@dataclass
class PushReceiver(ComponentArgs):
    """``flaretune.streaming.receiver.ModelPushReceiver``: where a site keeps pushed models."""

    dest_dir: str = _help("models", "relative to the site's workspace root")
    task_name: str = _help("model_push", "must match the controller's task_name")
    extra: Dict[str, Any] = _extra()


@dataclass
class StreamedRounds(ComponentArgs):
    """``flaretune.streaming.fedavg.StreamedFedAvg``: FedAvg over whole model folders."""

    model_dir: str = _help("models/base", "initial HF model folder (relative: under the server's workspace root)")
    model_name: str = _help("ner", "name of the model at the sites")
    num_rounds: int = _help(2, "rounds in all")
    chunk_mb: float = _help(64, "chunk size of the pushes in MiB")
    shard_mb: float = _help(1024, "largest safetensors shard of the averaged model in MiB")
    extra: Dict[str, Any] = _extra()


@dataclass
class FullTraining(ComponentArgs):
    """``flaretune.executors.full_train.FullModelTrainExecutor``: a site fine-tunes every weight."""

    dest_dir: str = _help("models", "where pushed models land")
    local_epochs: float = _help(1.0, "epochs per round")
    learning_rate: float = _help(5e-5, "AdamW learning rate")
    chunk_mb: float = _help(64, "chunk size of the update stream in MiB")
    extra: Dict[str, Any] = _extra()


# -- privacy -----------------------------------------------------------------------------------------
@dataclass
class ClientDP:
    """Client-level DP (``flaretune.filters.dp.GaussianPrivacyFilter``) on every site's ``train`` result."""

    noise_multiplier: float = _help(0.5, "z: noise std is z * clip_norm")
    clip_norm: float = _help(0.25, "C: the update's L2 norm bound")


@dataclass
class DPSGD:
    """DP-SGD at every site (the executor's ``train_step="dpsgd"``), within ``epsilon_budget`` at ``delta``."""

    epsilon_budget: float = _help(8.0, "the site's total epsilon over the job")
    noise_multiplier: float = _help(1.0, "noise std over max_grad_norm")
    max_grad_norm: float = _help(1.0, "per-example gradient clip")
    sample_rate: float = _help(0.05, "Poisson sampling rate of a lot")
    delta: float = _help(1e-5, "delta of the budget")
    accountant: str = _help("rdp", "privacy accountant (flaretune.privacy)")

    def executor_args(self) -> Dict[str, Any]:
        return {"train_step": "dpsgd", "dp_epsilon_budget": self.epsilon_budget, "dp_delta": self.delta,
                "dp_accountant": self.accountant,
                "train_step_args": {"noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                                    "sample_rate": self.sample_rate}}


@dataclass
class SecureAggregation:
    """Pairwise masking with dropout recovery (``flaretune.aggregation.secagg``) for the ``train`` task."""

    threshold: Optional[int] = _help(None, "shares needed to unmask (None: a majority)")
    modulus_bits: int = _help(64, "bits of the masked integers")
    fraction_bits: int = _help(32, "fixed-point fraction bits")
