"""Recipes for the LoRA jobs: ``clinical_ner`` (hospitals, NER) and ``fin_instruct`` (banks, instruction tuning).

Both run :class:`~flaretune.aggregation.controller.FedAggController` over a
:class:`~flaretune.aggregation.persistor.PeftAdapterPersistor` on the server and a PEFT executor at every site,
with TensorBoard metrics; the transfer (quantization, top-k sparsification) and the privacy options (client-level
DP, DP-SGD, secure aggregation) are arguments, wired as ``flaretune compare`` wires them into a job folder.
"""

from dataclasses import asdict, replace
from typing import List, Optional

from flaretune.recipes.args import (
    DPSGD, Buffered, ClientDP, InstructAdapter, InstructTraining, NerAdapter, NerTraining, Rounds, SecureAggregation,
)
from flaretune.recipes.base import FlaretuneRecipe

TASKS = ["train", "validate", "submit_model"]
CONTROLLER = "flaretune.aggregation.controller.FedAggController"
FEDBUFF = "flaretune.aggregation.fedbuff.FedBuffController"
PERSISTOR = "flaretune.aggregation.persistor.PeftAdapterPersistor"
DP_FILTER = "flaretune.filters.dp.GaussianPrivacyFilter"
TB_EVENT = "analytix_log_stats"
SERVER_WIDGETS = [{"id": "tb_analytics_receiver", "path": "nvflare.app_opt.tracking.tb.tb_receiver.TBAnalyticsReceiver",
                   "args": {"events": [f"fed.{TB_EVENT}"]}}]
CLIENT_WIDGETS = [
    {"id": "tb_writer", "path": "nvflare.app_opt.tracking.tb.tb_writer.TBWriter", "args": {}},
    {"id": "event_to_fed", "path": "nvflare.app_common.widgets.convert_to_fed_event.ConvertToFedEvent",
     "args": {"events_to_convert": [TB_EVENT], "fed_event_prefix": "fed."}},
]


class PeftRecipe(FlaretuneRecipe):
    """A LoRA federation; a subclass names the executor and the scenario's defaults (:meth:`defaults`).

    Args:
        name: the job's name (its folder's name when exported); default the scenario's.
        min_clients: sites the job needs to start (``meta.json``); default the scenario's.
        rounds: the round loop (:class:`~flaretune.recipes.args.Rounds`), or asynchronous FedBuff
            (:class:`~flaretune.recipes.args.Buffered`).
        adapter: base model and LoRA of the global adapter.
        training: each site's local training.
        quantization: ``float16``, ``bfloat16``, ``blockwise8``, ``nf4``, ``fp4``, ``entropy`` both ways, or None / ``"none"``.
        keep_fraction: top-k sparsification of the sites' results (e.g. 0.1); None: off.
        client_dp: clip and noise every ``train`` result at the site (:class:`~flaretune.recipes.args.ClientDP`).
        dp_sgd: train with DP-SGD at every site within a budget (:class:`~flaretune.recipes.args.DPSGD`).
        secure_aggregation: the server sees only the sum of the masked updates
            (:class:`~flaretune.recipes.args.SecureAggregation`); replaces the result quantization of ``train``.
    """

    job_name = ""
    executor = ""
    default_min_clients = 3

    @classmethod
    def defaults(cls) -> dict:
        """The scenario's ``rounds``, ``adapter`` and ``training``: those of its checked-in job folder."""
        raise NotImplementedError

    def __init__(self, *, name: Optional[str] = None, min_clients: Optional[int] = None,
                 rounds=None, adapter=None, training=None,
                 quantization: Optional[str] = "float16", keep_fraction: Optional[float] = None,
                 client_dp: Optional[ClientDP] = None, dp_sgd: Optional[DPSGD] = None,
                 secure_aggregation: Optional[SecureAggregation] = None):
        from flaretune.filters import filter_config

        defaults = self.defaults()
        name = name or self.job_name
        self.rounds = rounds or defaults["rounds"]
        self.training = training or defaults["training"]
        self.adapter = self._complete(adapter or defaults["adapter"], self.training)
        self.quantization, self.keep_fraction = quantization, keep_fraction
        self.client_dp, self.dp_sgd, self.secure_aggregation = client_dp, dp_sgd, secure_aggregation
        executor_args = self.training.args()
        if dp_sgd is not None:
            executor_args.update(dp_sgd.executor_args())
        server = {"format_version": 2,
                  "workflows": [{"id": "fedbuff", "path": FEDBUFF, "args": self.rounds.args()}
                                if isinstance(self.rounds, Buffered) else
                                {"id": "fed_agg", "path": CONTROLLER, "args": self.rounds.args()}],
                  "components": [{"id": "persistor", "path": PERSISTOR, "args": self.adapter.args()}]
                  + [dict(c) for c in SERVER_WIDGETS]}
        client = {"format_version": 2,
                  "executors": [{"tasks": list(TASKS), "executor": {"path": self.executor, "args": executor_args}}],
                  "components": [dict(c) for c in CLIENT_WIDGETS]}
        qtype = None if quantization in (None, "none") else quantization
        for side, config in (("server", server), ("client", client)):
            chains = filter_config(side, TASKS, quantization_type=qtype, keep_fraction=keep_fraction)
            config["task_data_filters"] = chains.get("task_data_filters", [])
            config["task_result_filters"] = chains.get("task_result_filters", [])
        if client_dp is not None:
            _add_client_dp(client, client_dp)
        if secure_aggregation is not None:
            from flaretune.aggregation.secagg import enable_secure_aggregation
            from flaretune.jobcfg import JobFolder

            enable_secure_aggregation(JobFolder.from_configs(name, {}, server, client), ["train"],
                                      **asdict(secure_aggregation))
        super().__init__(name, min_clients or self.default_min_clients, server, client)

    @staticmethod
    def _complete(adapter, training):
        return adapter


def _own_chain(config: dict, key: str, task: str) -> List[dict]:
    """The filters of ``task`` in its own chain entry (FLARE takes one entry per task: a shared one is split)."""
    entries = config.setdefault(key, [])
    filters = [f for e in entries if task in e["tasks"] for f in e["filters"]]
    for entry in entries:
        entry["tasks"] = [t for t in entry["tasks"] if t != task]
    config[key] = [e for e in entries if e["tasks"]]
    own = {"tasks": [task], "filters": filters}
    config[key].append(own)
    return own["filters"]


def _add_client_dp(client: dict, dp: ClientDP) -> None:
    """GaussianPrivacyFilter records the received global model after the job's dequantizer and clips + noises
    the ``train`` result before anything else touches it (sparsifier, quantizer)."""
    flt = {"path": DP_FILTER, "args": asdict(dp)}
    _own_chain(client, "task_data_filters", "train").append(dict(flt))
    _own_chain(client, "task_result_filters", "train").insert(0, dict(flt))


class ClinicalNerRecipe(PeftRecipe):
    """``jobs/clinical_ner``: hospitals train a LoRA adapter and token-classification head of MiniLM
    (:class:`~flaretune.executors.peft_train.PeftTrainExecutor`)."""

    job_name = "clinical_ner"
    executor = "flaretune.executors.peft_train.PeftTrainExecutor"

    @classmethod
    def defaults(cls) -> dict:
        return {"rounds": Rounds(num_rounds=10), "adapter": NerAdapter(), "training": NerTraining()}


class FinInstructRecipe(PeftRecipe):
    """``jobs/fin_instruct``: banks instruction-tune SmolLM2 with LoRA
    (:class:`~flaretune.executors.peft_causal.PeftCausalLMExecutor`); the adapter folder is told the prompt and
    label words the banks score with, unless ``adapter.task`` says otherwise."""

    job_name = "fin_instruct"
    executor = "flaretune.executors.peft_causal.PeftCausalLMExecutor"

    @classmethod
    def defaults(cls) -> dict:
        return {"rounds": Rounds(num_rounds=5), "adapter": InstructAdapter(), "training": InstructTraining()}

    @staticmethod
    def _complete(adapter: InstructAdapter, training: InstructTraining) -> InstructAdapter:
        if adapter.task is not None:
            return adapter
        from flaretune.data.types import SENTIMENT_LABELS

        label_words = training.extra.get("label_words") or list(SENTIMENT_LABELS)
        return replace(adapter, task={"system_prompt": training.system_prompt, "label_words": label_words,
                                      "max_length": training.max_length})
