"""Large-model transfer over FLARE's object streaming, with memory bounded by the chunk size.

Pure core (no FLARE): ``chunks`` (planning, sha256, manifest), ``writer`` (temp file + resume sidecar +
verified publish), ``schedule`` (what to send next, retries, test fault injection), ``state_dict``
(spill a state dict to safetensors shards and back). FLARE glue on top: ``producer``/``consumer``
(ObjectProducer/ObjectConsumer), ``controller.ModelPushController`` and ``receiver.ModelPushReceiver``
(the ``model_push`` task). For full-model FedAvg: ``aggregate`` (average model folders on disk) and
``fedavg.StreamedFedAvg`` (its site side is ``flaretune.executors.full_train``).
Importing this package does not import nvflare or torch.
"""

from flaretune.streaming.chunks import (
    DEFAULT_CHUNK_MB,
    MAX_CHUNK_BYTES,
    Chunk,
    FileEntry,
    Manifest,
    build_manifest,
    chunk_size_from_mb,
    plan_chunks,
)
from flaretune.streaming.schedule import ChunkScheduler, TransferError
from flaretune.streaming.state_dict import load_state_dict, spill_state_dict, write_synthetic_model
from flaretune.streaming.writer import ChecksumError, FileWriter, TransferReceiver

__all__ = [
    "DEFAULT_CHUNK_MB",
    "MAX_CHUNK_BYTES",
    "Chunk",
    "ChecksumError",
    "ChunkScheduler",
    "FileEntry",
    "FileWriter",
    "Manifest",
    "TransferError",
    "TransferReceiver",
    "build_manifest",
    "chunk_size_from_mb",
    "load_state_dict",
    "plan_chunks",
    "spill_state_dict",
    "write_synthetic_model",
]
