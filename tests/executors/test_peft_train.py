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
