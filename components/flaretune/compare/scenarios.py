"""What ``flaretune compare`` needs to know about a scenario, in one registry.

A scenario names its job folder's executor, the trainer every setting trains with, how its data is
prepared and split over sites, and its headline metric. :mod:`flaretune.compare.run` drives any of
them the same way: federated in the FLARE simulator, then centralized, local-only and zero-shot in
process, every setting scored on the shared test set by the scenario's one ``score`` function.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from flaretune.errors import ConfigError


@dataclass(frozen=True)
class Scenario:
    name: str
    executor: str  # the job's executor class name, how a job folder (even a renamed copy) is recognised
    metric: str  # report.json "metric"
    metric_title: str  # axis and table heading
    headline: str  # the key of the trainer's scores that is the metric
    prepare: Callable  # (out_dir, options) -> ComparisonData
    make_trainer: Callable  # (spec, executor_args, num_threads) -> Trainer
    setting: Callable[[dict], dict]  # a setting's scores -> what report.json keeps of it ("test" first)
    describe: Callable[[dict], str]  # a setting's scores -> a few words for the progress line
    labels_in_spec: bool  # the PeftSpec carries the data's label set (token classification)
    zero_shot: bool  # the base model without tuning is a meaningful baseline
    extend: Optional[Callable] = None  # (run, federated result) -> more report.json entries (split_ner)


# -- clinical NER ---------------------------------------------------------------------------------

def _ner_trainer(spec, ex: dict, num_threads: int):
    from flaretune.train.ner_trainer import NerTrainer

    return NerTrainer(spec, max_length=int(ex.get("max_length", 64)), num_threads=num_threads)


def _ner_setting(scores: dict) -> dict:
    return {"test": scores["f1"], "per_type": {t: v["f1"] for t, v in scores["per_type"].items()},
            "n_predicted": scores["n_predicted"], "n_gold": scores["n_gold"], "collapse": scores.get("collapse")}


def _ner_describe(scores: dict) -> str:
    return (f"test entity F1 {scores['f1']:.4f} ({scores['n_predicted']} entities predicted, "
            f"{scores['n_gold']} gold)")


def _ner_prepare(out_dir, options):
    from flaretune.compare.data import prepare_ner

    return prepare_ner(out_dir, options.sites, options.seed, options.skew, options.train, options.test,
                       style=options.style or "notes")


# -- financial instruction tuning ------------------------------------------------------------------

def _fin_trainer(spec, ex: dict, num_threads: int):
    from flaretune.data.types import SENTIMENT_LABELS
    from flaretune.train.causal import InstructTrainer

    return InstructTrainer(
        spec, max_length=int(ex.get("max_length", 96)), num_threads=num_threads,
        system_prompt=ex.get("system_prompt"), label_words=ex.get("label_words") or SENTIMENT_LABELS,
        eval_batch_size=int(ex.get("eval_batch_size", 16)), logit_adjustment=0.0 if ex.get("train_step") == "dpsgd" else float(ex.get("logit_adjustment", 0.0)),
    )


def _fin_setting(scores: dict) -> dict:
    if "accuracy" not in scores:
        raise ConfigError("the test set has no label-word answers (positive / negative / neutral) to score; "
                          "compare needs a labelled test file")
    per_label = scores["per_label"]
    return {"test": scores["accuracy"], "macro_f1": scores["macro_f1"],
            "per_label": {label: v["f1"] for label, v in per_label.items()},
            "predicted": {label: v["predicted"] for label, v in per_label.items()},
            "collapse": scores.get("collapse")}


def _fin_describe(scores: dict) -> str:
    answered = ", ".join(f"{label} {v['predicted']}" for label, v in scores.get("per_label", {}).items())
    return f"test accuracy {scores.get('accuracy', 0.0):.4f}, macro-F1 {scores.get('macro_f1', 0.0):.4f} (answered {answered})"


def _fin_prepare(out_dir, options):
    from flaretune.compare.data import prepare_fin

    return prepare_fin(out_dir, options.sites, options.seed, options.alpha, options.train, options.test,
                       style=options.style or "messages")


SCENARIOS: Dict[str, Scenario] = {}


def register_scenario(scenario: Scenario) -> None:
    SCENARIOS[scenario.name] = scenario


register_scenario(Scenario(
    name="clinical_ner", executor="PeftTrainExecutor", metric="entity_f1", metric_title="test entity F1",
    headline="f1", prepare=_ner_prepare, make_trainer=_ner_trainer, setting=_ner_setting, describe=_ner_describe,
    labels_in_spec=True, zero_shot=False,
))
register_scenario(Scenario(
    name="fin_instruct", executor="PeftCausalLMExecutor", metric="accuracy", metric_title="test accuracy",
    headline="accuracy", prepare=_fin_prepare, make_trainer=_fin_trainer, setting=_fin_setting,
    describe=_fin_describe, labels_in_spec=False, zero_shot=True,
))


def _split_extend(run, fed: dict) -> dict:
    from flaretune.compare.split import extend

    return extend(run, fed)


register_scenario(Scenario(  # split learning (flaretune.split) on the clinical NER data, beside federated LoRA
    name="split_ner", executor="SplitLearningExecutor", metric="entity_f1", metric_title="test entity F1",
    headline="f1", prepare=_ner_prepare, make_trainer=_ner_trainer, setting=_ner_setting, describe=_ner_describe,
    labels_in_spec=True, zero_shot=False, extend=_split_extend,
))


def scenario_for(job) -> Scenario:
    """The scenario whose executor the job folder (a :class:`~flaretune.jobcfg.JobFolder`) runs."""
    executor_class = job.executor()["path"].rsplit(".", 1)[-1]
    for scenario in SCENARIOS.values():
        if scenario.executor == executor_class:
            return scenario
    known = ", ".join(f"{s.name} ({s.executor})" for s in SCENARIOS.values())
    raise ConfigError(f"{job.path}: executor {executor_class} has no comparison scenario; known: {known}")


def style_names(name: str) -> List[str]:
    """The synthetic data styles scenario ``name`` offers (its default first)."""
    if name in ("clinical_ner", "split_ner"):
        from flaretune.data.clinical import STYLES
        return ["notes"] + [s for s in STYLES if s != "notes"]
    from flaretune.data.finance import FIN_STYLES
    return ["messages"] + [s for s in FIN_STYLES if s != "messages"]


def default_style(name: str) -> Optional[str]:
    return style_names(name)[0]
