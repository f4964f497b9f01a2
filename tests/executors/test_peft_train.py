"""PeftTrainExecutor (clinical NER) keeps its behaviour on top of PeftExecutor."""

import numpy as np

from nvflare.apis.fl_constant import ReturnCode
from nvflare.app_common.abstract.fl_model import ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flaretune.keys import NUM_EXAMPLES as NUM_EXAMPLES_KEY
from flaretune.data.types import CLINICAL_NOTES_LABELS
from flaretune.executors.peft_train import PeftTrainExecutor
from flaretune.models.lora import PeftSpec

from .conftest import AbortAfter, make_ctx, make_task, params_of

SPEC = PeftSpec(model_name="tiny-minilm-ner", labels=CLINICAL_NOTES_LABELS, lora_r=4)


def test_train_validate_submit(signal):
    ex = PeftTrainExecutor(max_steps=2, batch_size=4, max_length=32, synthetic_train_size=8, send_diff=True)
    task = make_task(SPEC)
    result = FLModelUtils.from_shareable(ex.execute("train", task, make_ctx("site-1"), signal))
    assert result.params_type == ParamsType.DIFF
    assert all("lora_" in k or "classifier" in k for k in result.params)
    assert result.meta[NUM_EXAMPLES_KEY] == 8
    assert {"global_f1", "local_f1", "local_precision", "train_loss"} <= set(result.metrics)
    local = params_of(ex.execute("submit_model", make_task(SPEC), make_ctx("site-1"), signal))
    sent = params_of(task)
    for name, diff in result.params.items():
        np.testing.assert_allclose(sent[name] + diff, local[name], atol=1e-6)
    validated = FLModelUtils.from_shareable(ex.execute("validate", task, make_ctx("site-1"), signal))
    assert 0.0 <= validated.metrics["f1"] <= 1.0


def test_abort_and_unknown_task(signal):
    ex = PeftTrainExecutor(max_steps=20, batch_size=4, max_length=32, synthetic_train_size=8)
    assert ex.execute("train", make_task(SPEC), make_ctx(), AbortAfter(checks=3)).get_return_code() == ReturnCode.TASK_ABORTED
    assert ex.execute("nope", make_task(SPEC), make_ctx(), signal).get_return_code() == ReturnCode.TASK_UNKNOWN


def test_dp_sgd_rounds_spend_the_sites_budget_and_an_over_budget_round_is_declined(signal, tmp_path):
    import json

    import pytest

    from flaretune.errors import ConfigError
    from flaretune.privacy import BUDGET_FILE, epsilon_for

    from .conftest import FakeEngine

    z, q, delta = 1.0, 0.5, 1e-5
    one, two = epsilon_for(z, q, 2, delta, "rdp"), epsilon_for(z, q, 4, delta, "rdp")
    args = dict(train_step="dpsgd", train_step_args={"noise_multiplier": z, "max_grad_norm": 1.0, "sample_rate": q},
                dp_epsilon_budget=(one + two) / 2, dp_delta=delta, max_steps=2, max_length=32,
                synthetic_train_size=8)
    ctx = make_ctx("site-1", engine=FakeEngine(root=tmp_path))
    task = make_task(SPEC)
    reply = PeftTrainExecutor(**args).execute("train", task, ctx, signal)
    assert reply.get_return_code(ReturnCode.OK) == ReturnCode.OK
    result = FLModelUtils.from_shareable(reply)
    assert result.metrics["dp_epsilon"] == pytest.approx(one, rel=1e-9)  # 2 steps at z=1, q=0.5
    sent = params_of(task)
    assert any(not np.array_equal(result.params[k], sent[k]) for k in sent if "lora_B" in k)  # the adapter moved
    assert json.loads((tmp_path / BUDGET_FILE).read_text())["epsilon"] == pytest.approx((one + two) / 2)
    # a restarted site (a new executor) keeps what was spent, and the next round would exceed the budget
    again = PeftTrainExecutor(**args).execute("train", make_task(SPEC, current_round=1), ctx, signal)
    assert again.get_return_code() == ReturnCode.EXECUTION_EXCEPTION
    with pytest.raises(ConfigError, match="'dpsgd' needs dp_epsilon_budget > 0"):
        PeftTrainExecutor(train_step="dpsgd")


def test_a_site_whose_tags_are_outside_the_jobs_label_set_refuses_every_train_task_in_one_line(signal, tmp_path):
    from flaretune.errors import SITE_ERROR_HEADER

    site_dir = tmp_path / "site-2"
    site_dir.mkdir()
    (site_dir / "train.conll").write_text("BRCA1 B-Gene\nmutation O\n\naspirin B-Chemical\n")
    (site_dir / "test.conll").write_text("aspirin B-Chemical\n")
    ex = PeftTrainExecutor(data_path=str(tmp_path / "{site_name}"), max_steps=1, max_length=32)
    message = (f"site-2: {site_dir}: data has tags ['B-Gene'] that the job's label set {CLINICAL_NOTES_LABELS} "
               "lacks; add them to the persistor's 'labels'")
    for round_number in (0, 1):  # refused again next round (not half set up: no traceback in round 2)
        reply = ex.execute("train", make_task(SPEC, current_round=round_number), make_ctx("site-2"), signal)
        assert reply.get_return_code() == ReturnCode.EXECUTION_EXCEPTION
        assert reply.get_header(SITE_ERROR_HEADER) == message
