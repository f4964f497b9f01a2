"""PeftCausalLMExecutor on tiny-smollm2 with the SYNTHETIC banks, driven the way FLARE drives it."""

import inspect

import numpy as np
import pytest

from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.fl_model import ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flaretune.keys import NUM_EXAMPLES as NUM_EXAMPLES_KEY
from flaretune.errors import ConfigError
from flaretune.executors.base import PeftExecutor
from flaretune.executors.peft_causal import PeftCausalLMExecutor
from flaretune.executors.peft_train import PeftTrainExecutor
from flaretune.models.lora import PeftSpec

from .conftest import AbortAfter, FakeEngine, RecordingWriter, make_ctx, make_task, params_of

SPEC = PeftSpec(model_name="tiny-smollm2", target_modules=["q_proj", "v_proj"], lora_r=4)
SMALL = dict(
    max_steps=2, batch_size=4, max_length=64, system_prompt="", synthetic_train_size=8, synthetic_test_size=6,
)


def executor(**args):
    return PeftCausalLMExecutor(**{**SMALL, **args})


def test_train_returns_only_adapter_tensors_and_metrics(signal):
    writer = RecordingWriter()
    ex = executor()
    task = make_task(SPEC, current_round=1)
    reply = ex.execute("train", task, make_ctx("site-2", FakeEngine({"tb_writer": writer})), signal)
    assert reply.get_return_code(ReturnCode.OK) == ReturnCode.OK
    result = FLModelUtils.from_shareable(reply)
    sent = params_of(task)
    assert result.params_type == ParamsType.FULL
    assert set(result.params) == set(sent) and all("lora_" in name for name in result.params)
    assert all(np.asarray(result.params[k]).shape == sent[k].shape for k in sent)
    assert any(not np.array_equal(result.params[k], sent[k]) for k in sent)  # it trained
    assert result.meta[NUM_EXAMPLES_KEY] == 8
    for prefix in ("global_", "local_"):
        assert 0.0 <= result.metrics[prefix + "accuracy"] <= 1.0
        assert 0.0 <= result.metrics[prefix + "macro_f1"] <= 1.0
        assert any(k.startswith(prefix + "f1_") for k in result.metrics)
    assert result.metrics["train_loss"] > 0
    assert {(tag, step) for tag, _, step in writer.scalars} >= {("global_accuracy", 1), ("local_accuracy", 1)}


def test_send_diff_returns_local_minus_global(signal):
    ex = executor(send_diff=True)
    task = make_task(SPEC)
    result = FLModelUtils.from_shareable(ex.execute("train", task, make_ctx(), signal))
    assert result.params_type == ParamsType.DIFF
    local = params_of(ex.execute("submit_model", make_task(SPEC), make_ctx(), signal))
    sent = params_of(task)
    for name, diff in result.params.items():
        np.testing.assert_allclose(sent[name] + diff, local[name], atol=1e-6)


def test_validate_scores_the_received_model(signal):
    ex = executor()
    reply = ex.execute("validate", make_task(SPEC), make_ctx("site-3"), signal)
    result = FLModelUtils.from_shareable(reply)
    assert result.params is None or not result.params
    assert result.meta[NUM_EXAMPLES_KEY] == 6
    assert set(result.metrics) >= {"accuracy", "macro_f1"}
    assert all(not k.startswith(("global_", "local_")) for k in result.metrics)


def test_submit_model_before_training_echoes_the_received_adapter(signal):
    task = make_task(SPEC)
    reply = executor().execute("submit_model", task, make_ctx(), signal)
    sent, got = params_of(task), params_of(reply)
    assert all(np.array_equal(sent[k], got[k]) for k in sent)


def test_abort_between_steps_returns_task_aborted_and_keeps_no_local_model(signal):
    ex = executor(max_steps=50)
    task = make_task(SPEC)
    # one check before training, then one per step: abort after the first step
    reply = ex.execute("train", task, make_ctx(), AbortAfter(checks=2))
    assert reply.get_return_code() == ReturnCode.TASK_ABORTED
    submitted = params_of(ex.execute("submit_model", make_task(SPEC), make_ctx(), signal))
    assert all(np.array_equal(submitted[k], v) for k, v in params_of(task).items())


def test_unknown_task_and_missing_spec_are_refused(signal):
    ex = executor()
    assert ex.execute("evaluate", Shareable(), make_ctx(), signal).get_return_code() == ReturnCode.TASK_UNKNOWN
    bare = make_task(SPEC)
    from flaretune.keys import MODEL_SPEC as SPEC_META_KEY

    model = FLModelUtils.from_shareable(bare)
    model.meta.pop(SPEC_META_KEY)
    reply = ex.execute("train", FLModelUtils.to_shareable(model), make_ctx(), signal)
    assert reply.get_return_code() == ReturnCode.BAD_TASK_DATA


def test_a_site_without_training_records_is_a_user_error(signal, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"instruction": "Sentiment?", "input": "Up.", "output": "positive"}\n')
    reply = executor(data_path=str(tmp_path / "train.jsonl")).execute("train", make_task(SPEC), make_ctx(), signal)
    assert reply.get_return_code() == ReturnCode.EXECUTION_EXCEPTION  # the one record went to the test split


def test_a_token_classification_spec_is_a_user_error(signal):
    spec = PeftSpec(model_name="tiny-minilm-ner", labels=["O", "B-X", "I-X"])
    reply = executor().execute("validate", make_task(spec), make_ctx(), signal)
    assert reply.get_return_code() == ReturnCode.EXECUTION_EXCEPTION


@pytest.mark.parametrize("cls", [PeftTrainExecutor, PeftCausalLMExecutor])
def test_every_constructor_argument_is_kept_under_its_name(cls):
    """FLARE's job exporter reads self.<arg> for each argument."""
    assert issubclass(cls, PeftExecutor)
    params = inspect.signature(cls.__init__).parameters
    instance = cls()
    for name, param in params.items():
        if name != "self":
            assert getattr(instance, name) == param.default, name


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"eval_batch_size": 0}, {"synthetic_alpha": 0.0}])
def test_bad_arguments_fail_at_construction(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        PeftCausalLMExecutor(**bad)


def test_logit_adjustment_is_off_under_dp_sgd_where_a_dataset_prior_would_couple_records():
    assert executor(logit_adjustment=1.0).effective_logit_adjustment() == 1.0
    dp = executor(logit_adjustment=1.0, train_step="dpsgd", dp_epsilon_budget=8.0)
    assert dp.effective_logit_adjustment() == 0.0
    with pytest.raises(ConfigError, match="logit_adjustment must be >= 0"):
        executor(logit_adjustment=-0.5)
