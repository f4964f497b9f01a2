"""DP-SGD at one site, without FLARE: size the step to the site's data, refuse a round over budget, record ε.

The ``dpsgd`` step samples every record with probability ``sample_rate`` at each step (Poisson), so its
batch is the whole training set (:mod:`flaretune.train.dp_sgd`); a round is ``max_steps`` such steps (or
``local_epochs`` of them). Before a round the site asks its :class:`~flaretune.privacy.budget.PrivacyBudget`
whether the round fits; after it, the steps actually taken are spent, so a round stopped early costs less.
"""

from pathlib import Path
from typing import Optional

from flaretune.errors import ConfigError
from flaretune.privacy.budget import BUDGET_FILE, PrivacyBudget
from flaretune.train.loop import total_steps

DP_STEP = "dpsgd"


class SiteDP:
    def __init__(self, settings, n_records: int, folder, epsilon: float, delta: float, accountant: str = "rdp"):
        """``settings`` (a :class:`~flaretune.train.flow.LocalTraining`) is adapted in place to a whole-dataset
        batch; the budget lives in ``folder/privacy_budget.json`` (the site's workspace root)."""
        if not epsilon > 0:
            raise ConfigError(f"train_step {DP_STEP!r} needs dp_epsilon_budget > 0 (the site's total epsilon)")
        settings.step_args = {**settings.step_args, "dataset_size": n_records}
        settings.batch_size = n_records
        step = settings.step()
        self.noise_multiplier, self.sample_rate = step.noise_multiplier, step.sample_rate
        self.steps = total_steps(n_records, n_records, settings.epochs, settings.max_steps)
        self.budget = PrivacyBudget(Path(folder) / BUDGET_FILE, epsilon, delta, accountant)

    def refusal(self) -> Optional[str]:
        """One line if the next round would take the site past its budget, else None."""
        return self.budget.would_exceed(self.noise_multiplier, self.sample_rate, self.steps)

    def spend(self, steps: int) -> float:
        """Record ``steps`` DP-SGD steps; the total ε spent."""
        return self.budget.spend(self.noise_multiplier, self.sample_rate, steps) if steps else self.budget.spent()
