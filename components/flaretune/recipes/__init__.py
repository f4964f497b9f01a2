"""flaretune's jobs as FLARE recipes: ``recipe.execute(SimEnv(...))`` / ``PocEnv`` / ``ProdEnv``, or ``export``.

One recipe per job folder under ``jobs/``; each is built from the dataclasses in :mod:`flaretune.recipes.args`
(the arguments its job JSON holds) and exports that job folder as checked in. ``jobs/<job>/job.py`` runs one
from the command line (:mod:`flaretune.recipes.cli`).

The recipe classes import FLARE's recipe module, which takes ``--export`` out of ``sys.argv`` when it is first
imported: they load on first use, so that importing this package (or the dataclasses) does not.
"""

import importlib

_LAZY = {"FlaretuneRecipe": "base", "PeftRecipe": "peft", "ClinicalNerRecipe": "peft",
         "FinInstructRecipe": "peft", "ModelPushRecipe": "streaming", "StreamedFedAvgRecipe": "streaming",
         "SplitNerRecipe": "split"}
_ARGS = ["Rounds", "Buffered", "NerAdapter", "InstructAdapter", "NerTraining", "InstructTraining", "ModelPush",
         "PushReceiver", "StreamedRounds", "FullTraining", "ClientDP", "DPSGD", "SecureAggregation"]

# job folder name -> recipe class name
RECIPES = {"clinical_ner": "ClinicalNerRecipe", "fin_instruct": "FinInstructRecipe",
           "model_push": "ModelPushRecipe", "streamed_fedavg": "StreamedFedAvgRecipe", "split_ner": "SplitNerRecipe"}

__all__ = list(_LAZY) + _ARGS + ["RECIPES", "recipe_class"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in _ARGS:
        return getattr(importlib.import_module(f"{__name__}.args"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recipe_class(job: str):
    """The recipe class of a job folder name (``clinical_ner``)."""
    from flaretune.errors import ConfigError

    if job not in RECIPES:
        raise ConfigError(f"no recipe for job {job!r}; recipes: {', '.join(RECIPES)}")
    return __getattr__(RECIPES[job])
