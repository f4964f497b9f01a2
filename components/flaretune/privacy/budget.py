"""A site's privacy budget: total (ε, δ) and the accountant's history, persisted in the site's workspace.

The file is JSON, replaced atomically (write a temporary file in the same folder, fsync, rename), so
a site killed mid-write keeps the old budget, never half of one; neither a restarted site nor a new
job under the same budget starts again from zero. :meth:`PrivacyBudget.spend` rereads the file under
an exclusive lock first, so two jobs sharing a budget cannot both spend its last ε.

File format (version 1)::

    {"version": 1, "epsilon": 8.0, "delta": 1e-05, "accountant": {accountant state_dict}}

The total ε may change between runs (the site admin's policy); δ may not, since ε spent at one δ says
nothing about another.
"""

import fcntl
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from flaretune.errors import ConfigError, FlaretuneError
from flaretune.privacy.accountants import check_delta, check_step, make_accountant

FILE_VERSION = 1
BUDGET_FILE = "privacy_budget.json"


class BudgetExceededError(FlaretuneError):
    """The next release would take the site past its privacy budget; the message says by how much."""


class PrivacyBudget:
    """Total ``epsilon`` at ``delta`` for one site, tracked by the named accountant in the file ``path``."""

    def __init__(self, path, epsilon: float, delta: float, accountant: str = "rdp"):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ConfigError(f"privacy budget epsilon must be a number > 0, got {epsilon!r}")
        self.path = Path(path)
        self.epsilon = float(epsilon)
        self.delta = check_delta(delta)
        self.accountant = make_accountant(accountant)
        self.load()

    # -- persistence ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read the history from the file, if there is one."""
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{self.path}: unreadable privacy budget file ({err}); it must not be deleted "
                              "or edited by hand, restore it from a backup") from None
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
            raise ConfigError(f"{self.path}: not a version-{FILE_VERSION} privacy budget file")
        if data.get("delta") != self.delta:
            raise ConfigError(f"{self.path}: this budget was spent at delta={data.get('delta')}, "
                              f"not delta={self.delta}; keep the site's delta or start a new budget file")
        try:
            self.accountant.load_state_dict(data.get("accountant"))
        except ConfigError as err:
            raise ConfigError(f"{self.path}: {err}") from None

    def save(self) -> None:
        """Write the budget atomically: a temporary file in the same folder, fsync, then rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": FILE_VERSION, "epsilon": self.epsilon, "delta": self.delta,
                "accountant": self.accountant.state_dict()}
        fd, tmp = tempfile.mkstemp(dir=str(self.path.parent), prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- questions and spending -----------------------------------------------------------------
    def spent(self) -> float:
        """ε spent so far at this budget's δ."""
        return self.accountant.get_epsilon(self.delta)

    def after(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """ε spent after ``steps`` more steps at ``(z, q)``."""
        trial = self.accountant.copy()
        trial.step(noise_multiplier, sample_rate, steps)
        return trial.get_epsilon(self.delta)

    def would_exceed(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> Optional[str]:
        """None if the next round fits, else one line naming the budget, ε spent and what the round needs."""
        check_step(noise_multiplier, sample_rate, steps)
        total = self.after(noise_multiplier, sample_rate, steps)
        if total <= self.epsilon:
            return None
        alone = make_accountant(self.accountant.name)
        alone.step(noise_multiplier, sample_rate, steps)
        return (f"privacy budget epsilon={self.epsilon:g} at delta={self.delta:g} ({self.path}) is exhausted: "
                f"{self.spent():.4f} spent, the next round ({steps} steps, noise_multiplier={noise_multiplier:g}, "
                f"sample_rate={sample_rate:g}) needs epsilon={alone.get_epsilon(self.delta):.4f} on its own "
                f"and would bring the total to {total:.4f}" + ("" if math.isfinite(total) else " (no guarantee)"))

    def spend(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """Record the steps and save; raise :class:`BudgetExceededError` (recording nothing) if they do not fit.

        The file is reread under an exclusive lock first, so another job's spending is counted. Returns
        the total ε spent.
        """
        with self._locked():
            self.load()
            refusal = self.would_exceed(noise_multiplier, sample_rate, steps)
            if refusal:
                raise BudgetExceededError(refusal)
            self.accountant.step(noise_multiplier, sample_rate, steps)
            self.save()
        return self.spent()
