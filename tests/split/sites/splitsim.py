"""A test-only split executor: one named site raises in the middle of one round's epoch."""

from flaretune.split.executor import SplitLearningExecutor


class FailingSplitExecutor(SplitLearningExecutor):
    def __init__(self, fail_site: str = "", fail_round: int = 0, fail_step: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.fail_site, self.fail_round, self.fail_step = fail_site, fail_round, fail_step
        self._round = -1

    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        from flaretune.split import wire

        self._round = int(wire.read_weights(shareable)["round"])
        return super().execute(task_name, shareable, fl_ctx, abort_signal)

    def before_step(self, step, fl_ctx):
        if fl_ctx.get_identity_name() == self.fail_site and self._round == self.fail_round and step == self.fail_step:
            raise RuntimeError(f"{self.fail_site} leaves mid-epoch (test)")
