import numpy as np
import pytest
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import UnsafeJobError

from flaretune.errors import ConfigError
from flaretune.filters.guard import AdapterOnlyGuard


def _result(kind, data):
    return DXO(data_kind=kind, data=data).to_shareable()


ADAPTER = {
    "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight": np.zeros((8, 32), np.float32),
    "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight": np.zeros((32, 8), np.float32),
    "base_model.model.classifier.weight": np.zeros((5, 32), np.float32),
    "base_model.model.classifier.bias": np.zeros(5, np.float32),
}


def test_adapter_and_head_tensors_pass_unchanged():
    shareable = _result(DataKind.WEIGHTS, dict(ADAPTER))
    out = from_shareable(AdapterOnlyGuard().process(shareable, FLContext()))
    assert sorted(out.data) == sorted(ADAPTER)


def test_a_base_weight_makes_the_job_unsafe_and_is_named():
    data = dict(ADAPTER, **{"base_model.model.bert.embeddings.word_embeddings.weight": np.zeros((10, 32))})
    with pytest.raises(UnsafeJobError, match="refused 1 of 5 tensors .*word_embeddings.weight"):
        AdapterOnlyGuard().process(_result(DataKind.WEIGHT_DIFF, data), FLContext())


def test_payload_above_the_limit_is_refused():
    big = {"x.lora_A.weight": np.zeros(300_000, np.float32)}  # 1.14 MiB
    with pytest.raises(UnsafeJobError, match="1.1 MiB of tensors, above this site's limit of 1 MiB"):
        AdapterOnlyGuard(max_mb=1).process(_result(DataKind.WEIGHTS, big), FLContext())
    AdapterOnlyGuard(max_mb=2).process(_result(DataKind.WEIGHTS, big), FLContext())


def test_metrics_pass_and_patterns_are_configurable():
    metrics = _result(DataKind.METRICS, {"f1": 0.9, "loss": 0.1})
    assert from_shareable(AdapterOnlyGuard().process(metrics, FLContext())).data == {"f1": 0.9, "loss": 0.1}
    only_lora = AdapterOnlyGuard(allowed=["*lora_*"])
    with pytest.raises(UnsafeJobError, match="classifier"):
        only_lora.process(_result(DataKind.WEIGHTS, dict(ADAPTER)), FLContext())


@pytest.mark.parametrize("args", [{"allowed": []}, {"allowed": [""]}, {"max_mb": 0}, {"max_mb": "10"}])
def test_bad_configuration_is_a_clear_error(args):
    with pytest.raises(ConfigError, match="AdapterOnlyGuard"):
        AdapterOnlyGuard(**args)
