"""Test-only fault injection for ``model_push``: a controller that corrupts what it sends, from outside the
production code (the sites' receiver is the real one).

``corrupt_chunks`` specs (JSON-able, so a job config can carry them):
- ``{"file": name or "*", "chunk": i, "times": n}``: the first ``n`` sends of chunk ``i`` go out with one byte
  flipped, their announced sha256 still the true one, so receivers must refuse them; ``n`` above the
  controller's ``max_retries`` makes the file fail;
- ``{"file": name, "file_sha256": true}``: the manifest announces a wrong whole-file sha256, so every chunk
  checks out and the file must still never be published.
"""

from typing import Callable, List, Optional, Sequence

from flaretune.errors import ConfigError
from flaretune.streaming.chunks import Manifest, build_manifest
from flaretune.streaming.controller import ModelPushController


def corrupter(specs: Optional[Sequence[dict]]) -> Optional[Callable[[str, int, int, bytes], bytes]]:
    """The chunk specs of ``specs`` as a ``fault_fn(file name, chunk index, attempt, data) -> data``."""
    if not specs:
        return None
    table = {}
    for spec in specs:
        if not isinstance(spec, dict) or ("chunk" not in spec and not spec.get("file_sha256")):
            raise ConfigError(
                "corrupt_chunks entries look like {'file': '*', 'chunk': 0, 'times': 1} or "
                f"{{'file': 'name', 'file_sha256': true}}, got {spec!r}"
            )
        if "chunk" in spec:
            table[(str(spec.get("file", "*")), int(spec["chunk"]))] = int(spec.get("times", 1))

    def corrupt(name: str, index: int, attempt: int, data: bytes) -> bytes:
        times = table.get((name, index), table.get(("*", index), 0))
        if attempt > times or not data:
            return data
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        return bytes(flipped)

    return corrupt


def corrupt_manifest(manifest: Manifest, specs: Optional[Sequence[dict]]) -> Manifest:
    """Apply the ``file_sha256`` specs: the manifest announces a wrong whole-file sha256 for those files."""
    for spec in specs or []:
        if spec.get("file_sha256"):
            for entry in manifest.files:
                if spec.get("file", "*") in ("*", entry.name):
                    entry.sha256 = "0" * 64
    return manifest


class CorruptingModelPush(ModelPushController):
    """``ModelPushController`` that sends corrupt chunks or a wrong manifest as ``corrupt_chunks`` says."""

    def __init__(self, corrupt_chunks: Optional[List[dict]] = None, **kwargs):
        super().__init__(**kwargs)
        self.corrupt_chunks = corrupt_chunks
        self._fault_fn = corrupter(corrupt_chunks)

    def _push(self, abort_signal, fl_ctx, **hooks):
        path = self._model_path(fl_ctx)
        manifest = build_manifest(path, self._chunk_size, model_name=self.model_name)
        return super()._push(abort_signal, fl_ctx, manifest=corrupt_manifest(manifest, self.corrupt_chunks),
                             fault_fn=self._fault_fn)
