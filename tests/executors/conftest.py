"""What FLARE hands an executor, built from FLARE's own classes: a task Shareable (DXO inside), an
FLContext that knows the site's name and engine, and an abort Signal."""

import json
from functools import lru_cache

import numpy as np
import pytest

from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flaretune.keys import MODEL_SPEC as SPEC_META_KEY
from flaretune.models.lora import PeftSpec, adapter_state


class RecordingWriter:
    """Stands in for the ``tb_writer`` component: keeps what the executor tracks."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, scalar, global_step=None):
        self.scalars.append((tag, scalar, global_step))


class FakeWorkspace:
    def __init__(self, root):
        self.root = root

    def get_root_dir(self):
        return str(self.root)


class FakeEngine:
    """The engine calls an executor makes: look up a job component by id; the site's workspace root."""

    def __init__(self, components=None, root=None):
        self.components = components or {}
        self.root = root

    def get_component(self, component_id):
        return self.components.get(component_id)

    def get_workspace(self):
        return FakeWorkspace(self.root)

    def fire_event(self, event_type, fl_ctx):
        """Error logs fire an event FLARE's engine would deliver; nothing listens here."""


class AbortAfter(Signal):
    """An abort signal that fires once it has been checked ``checks`` times (i.e. between training steps)."""

    def __init__(self, checks: int):
        super().__init__()
        self.remaining = checks

    @property
    def triggered(self):
        self.remaining -= 1
        return self.remaining < 0


def make_ctx(site="site-1", engine=None) -> FLContext:
    ctx = FLContext()
    ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=False)
    if engine is not None:
        ctx.set_prop(ReservedKey.ENGINE, engine, private=True, sticky=False)
    return ctx


@lru_cache(maxsize=None)
def _initial_params(spec_json: str):
    return {k: v.numpy() for k, v in adapter_state(PeftSpec.from_dict(json.loads(spec_json)).build()).items()}


def make_task(spec, params=None, current_round=0, meta=None):
    """The task Shareable FedAggController sends: FULL adapter params plus the spec in the meta."""
    if params is None:
        params = {k: v.copy() for k, v in _initial_params(json.dumps(spec.to_dict(), sort_keys=True)).items()}
    model = FLModel(
        params_type=ParamsType.FULL, params=params, current_round=current_round, total_rounds=2,
        meta={SPEC_META_KEY: spec.to_dict(), **(meta or {})},
    )
    return FLModelUtils.to_shareable(model)


def params_of(shareable):
    return {k: np.asarray(v) for k, v in FLModelUtils.from_shareable(shareable).params.items()}


@pytest.fixture
def signal():
    return Signal()
