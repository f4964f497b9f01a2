"""FLARE glue without FLARE processes: producer and consumer talk directly, with a bare FLContext."""

import numpy as np
import pytest
from nvflare.apis.fl_context import FLContext

from flaretune.errors import ConfigError
from flaretune.streaming import protocol as P
from flaretune.streaming.chunks import build_manifest, need_all
from flaretune.streaming.consumer import ModelConsumerFactory
from flaretune.streaming.controller import ModelPushController
from flaretune.streaming.producer import ModelChunkProducer, _DoneProducer
from flaretune.streaming.receiver import ModelPushReceiver
from flaretune.streaming.schedule import ChunkScheduler


@pytest.fixture
def model(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model-00001.safetensors").write_bytes(bytes((i * 13) % 251 for i in range(20_000)))
    (src / "config.json").write_bytes(b"{}")
    return src


def flip_chunk(index: int, times: int):
    """A fault_fn that flips one byte in the first ``times`` sends of chunk ``index``."""
    def fault(name, chunk, attempt, data):
        return bytes(b ^ 0xFF if i == 0 else b for i, b in enumerate(data)) if chunk == index and attempt <= times else data
    return fault


def _push(model, dest, fault_fn=None, max_retries=2):
    manifest = build_manifest(model, 4096, model_name="base")
    scheduler = ChunkScheduler(manifest, {"site-1": need_all(manifest)}, max_retries=max_retries)
    producer = ModelChunkProducer(model, scheduler, ["site-1"], 1000, 5.0, fault_fn)
    factory = ModelConsumerFactory(dest)
    ctx, stream_ctx = FLContext(), {P.KEY_PUSH_ID: "push-1", P.KEY_MANIFEST: manifest.to_dict()}
    consumer = factory.get_consumer(stream_ctx, ctx)
    messages = 0
    while True:
        msg, timeout = producer.produce(stream_ctx, ctx)
        if msg is None:
            break
        messages += 1
        data = msg.get(P.KEY_DATA)
        assert len(data) <= 1000  # one slice per message
        # a uint8 array: FOBS moves it through FLARE's download service instead of inline in the message
        assert isinstance(data, np.ndarray) and data.dtype == np.uint8
        _, reply = consumer.consume(msg, stream_ctx, ctx)
        if producer.process_replies({"site-1": reply}, stream_ctx, ctx) is False:
            break
    producer.close()
    done = _DoneProducer(["site-1"], 5.0)
    msg, _ = done.produce(stream_ctx, ctx)
    _, reply = factory.get_consumer(stream_ctx, ctx).consume(msg, stream_ctx, ctx)
    return scheduler, done.process_replies({"site-1": reply}, stream_ctx, ctx), messages


def test_push_in_slices_with_a_corrupt_chunk_resent(model, tmp_path):
    scheduler, result, messages = _push(model, tmp_path / "dest", flip_chunk(2, times=1))
    assert scheduler.error is None and scheduler.retries == 1
    assert result == {"site-1": {"published": ["config.json", "model-00001.safetensors"]}}
    for name in ("config.json", "model-00001.safetensors"):
        assert (tmp_path / "dest" / "base" / name).read_bytes() == (model / name).read_bytes()
    assert messages > 20  # 5 chunks x 5 slices, plus the resend


def test_chunk_corrupt_past_retries_stops_and_publishes_nothing_of_that_file(model, tmp_path):
    scheduler, result, _ = _push(model, tmp_path / "dest", flip_chunk(1, times=9), max_retries=1)
    assert "chunk 1 still refused after 2 attempts" in scheduler.error
    assert result is False
    assert not (tmp_path / "dest" / "base" / "model-00001.safetensors").exists()


@pytest.mark.parametrize(
    "args, field",
    [
        ({"chunk_mb": 0}, "chunk_mb"),
        ({"chunk_mb": 2048}, "chunk_mb"),
        ({"slice_mb": -1}, "slice_mb"),
        ({"streams": 0}, "streams"),
        ({"max_retries": -1}, "max_retries"),
        ({"model_dir": ""}, "model_dir"),
    ],
)
def test_controller_validates_at_construction(args, field):
    with pytest.raises(ConfigError, match=field):
        ModelPushController(**{"model_dir": "/models/base", **args})


def test_components_keep_their_arguments_for_the_job_exporter():
    args = dict(model_dir="/m", model_name="base", task_name="push", chunk_mb=16, slice_mb=4, streams=2,
                max_retries=1, chunk_timeout=60.0, prepare_timeout=30, targets=["site-1"], report_path="/tmp/r.json")
    ctl = ModelPushController(**args)
    assert {k: getattr(ctl, k) for k in args} == args
    rx = ModelPushReceiver(dest_dir="models", task_name="push")
    assert (rx.dest_dir, rx.task_name) == ("models", "push")
    with pytest.raises(ConfigError, match="dest_dir"):
        ModelPushReceiver(dest_dir="")
