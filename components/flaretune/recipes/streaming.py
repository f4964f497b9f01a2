"""Recipes for the jobs that stream whole model folders: ``model_push`` and ``streamed_fedavg``."""

from typing import Optional

from flaretune.errors import ConfigError
from flaretune.recipes.args import FullTraining, ModelPush, PushReceiver, StreamedRounds
from flaretune.recipes.base import FlaretuneRecipe

PUSH_CONTROLLER = "flaretune.streaming.controller.ModelPushController"
PUSH_RECEIVER = "flaretune.streaming.receiver.ModelPushReceiver"
STREAMED_FEDAVG = "flaretune.streaming.fedavg.StreamedFedAvg"
FULL_TRAIN = "flaretune.executors.full_train.FullModelTrainExecutor"


class ModelPushRecipe(FlaretuneRecipe):
    """``jobs/model_push``: stream ``push.model_dir`` to every site, checksummed and resumable
    (:class:`~flaretune.streaming.controller.ModelPushController` to
    :class:`~flaretune.streaming.receiver.ModelPushReceiver`)."""

    job_name = "model_push"

    @classmethod
    def defaults(cls) -> dict:
        return {"push": ModelPush(), "receiver": PushReceiver()}

    def __init__(self, *, name: Optional[str] = None, min_clients: int = 2, push: Optional[ModelPush] = None,
                 receiver: Optional[PushReceiver] = None):
        defaults = self.defaults()
        self.push, self.receiver = push or defaults["push"], receiver or defaults["receiver"]
        if self.push.task_name != self.receiver.task_name:
            raise ConfigError(f"push.task_name {self.push.task_name!r} and receiver.task_name "
                              f"{self.receiver.task_name!r} must be the same task")
        server = {"format_version": 2, "components": [],
                  "workflows": [{"id": "model_push", "path": PUSH_CONTROLLER, "args": self.push.args()}]}
        client = {"format_version": 2, "components": [],
                  "executors": [{"tasks": [self.push.task_name],
                                 "executor": {"path": PUSH_RECEIVER, "args": self.receiver.args()}}]}
        super().__init__(name or self.job_name, min_clients, server, client)


class StreamedFedAvgRecipe(FlaretuneRecipe):
    """``jobs/streamed_fedavg``: FedAvg over full models that travel as streamed folders
    (:class:`~flaretune.streaming.fedavg.StreamedFedAvg` and
    :class:`~flaretune.executors.full_train.FullModelTrainExecutor`)."""

    job_name = "streamed_fedavg"

    @classmethod
    def defaults(cls) -> dict:
        return {"rounds": StreamedRounds(), "training": FullTraining()}

    def __init__(self, *, name: Optional[str] = None, min_clients: int = 2, rounds: Optional[StreamedRounds] = None,
                 training: Optional[FullTraining] = None):
        defaults = self.defaults()
        self.rounds, self.training = rounds or defaults["rounds"], training or defaults["training"]
        server = {"format_version": 2, "components": [],
                  "workflows": [{"id": "streamed_fedavg", "path": STREAMED_FEDAVG, "args": self.rounds.args()}]}
        client = {"format_version": 2, "components": [],
                  "executors": [{"tasks": ["model_push", "train"],
                                 "executor": {"path": FULL_TRAIN, "args": self.training.args()}}]}
        super().__init__(name or self.job_name, min_clients, server, client)
