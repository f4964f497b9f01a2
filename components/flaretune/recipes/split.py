"""The recipe of ``jobs/split_ner``: split learning of the clinical NER tagger (:mod:`flaretune.split`).

:class:`~flaretune.split.controller.SplitLearningController` over a
:class:`~flaretune.aggregation.persistor.PeftAdapterPersistor` on the server, the
:class:`~flaretune.split.executor.SplitLearningExecutor` on the ``split_train`` task at every site. The
activations and gradients travel as FLARE aux messages, outside the task filters, so the recipe takes no
quantization or privacy filters; ``sigma`` is the noise the sites add to what they send.
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional

from flaretune.recipes.args import ComponentArgs, NerAdapter, _extra, _help
from flaretune.recipes.base import FlaretuneRecipe

CONTROLLER = "flaretune.split.controller.SplitLearningController"
EXECUTOR = "flaretune.split.executor.SplitLearningExecutor"
PERSISTOR = "flaretune.aggregation.persistor.PeftAdapterPersistor"
TASK = "split_train"


@dataclass
class SplitRounds(ComponentArgs):
    """``SplitLearningController``: rounds, the cut and the server's middle."""

    num_rounds: int = _help(3, "rounds in all (one epoch of each site's data a round)")
    persistor_id: str = _help("persistor", "the PeftAdapterPersistor's id")
    bottom_layers: int = _help(1, "blocks after the embeddings that stay at the sites")
    top_layers: int = _help(1, "blocks before the head that stay at the sites")
    learning_rate: float = _help(0.002, "AdamW step size of the server's middle")
    sigma: float = _help(0.0, "std of the Gaussian noise the sites add to the activations they send")
    site_timeout: float = _help(120.0, "seconds a middle step waits for a site before dropping it")
    train_timeout: int = _help(0, "seconds a round's task may run (0: no limit)")
    num_threads: int = _help(0, "torch threads of the server (0: torch's default)")
    min_clients: int = _help(1, "sites that must finish a round, else the job stops")
    extra: Dict[str, Any] = _extra()


@dataclass
class SplitTraining(ComponentArgs):
    """``SplitLearningExecutor``: each site's data and its bottom/top training."""

    data_path: str = _help("", "site data; '{site_name}' expands (default: synthetic sites)")
    max_steps: int = _help(0, "batches a round (0: one epoch)")
    learning_rate: float = _help(0.002, "AdamW step size of the site's bottom and top")
    batch_size: int = _help(16, "records a batch")
    max_length: int = _help(64, "tokens a record")
    seed: int = _help(0, "seed of the batch order and the noise")
    synthetic_sites: int = _help(3, "synthetic hospitals the split draws from")
    synthetic_skew: float = _help(0.8, "entity-mix skew of the synthetic split")
    synthetic_train_size: int = _help(0, "synthetic training records (0: the generator's)")
    num_threads: int = _help(0, "torch threads of a site (0: torch's default)")
    step_timeout: float = _help(300.0, "seconds a site waits for the server's answer to a step")
    extra: Dict[str, Any] = _extra()


class SplitNerRecipe(FlaretuneRecipe):
    """``jobs/split_ner``: hospitals keep embeddings, edge blocks and head; the server runs the middle."""

    job_name = "split_ner"

    @classmethod
    def defaults(cls) -> dict:
        return {"rounds": SplitRounds(), "adapter": NerAdapter(), "training": SplitTraining()}

    def __init__(self, *, name: Optional[str] = None, min_clients: Optional[int] = None, rounds=None,
                 adapter=None, training=None):
        defaults = self.defaults()
        self.rounds = rounds or defaults["rounds"]
        self.adapter = adapter or defaults["adapter"]
        self.training = training or defaults["training"]
        server = {"format_version": 2,
                  "workflows": [{"id": "split", "path": CONTROLLER, "args": self.rounds.args()}],
                  "components": [{"id": "persistor", "path": PERSISTOR, "args": self.adapter.args()}]}
        client = {"format_version": 2,
                  "executors": [{"tasks": [TASK], "executor": {"path": EXECUTOR, "args": self.training.args()}}]}
        super().__init__(name or self.job_name, min_clients or 3, server, client)
