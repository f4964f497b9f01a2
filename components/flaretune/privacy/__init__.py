"""Differential-privacy accounting: accountants behind a registry (``make_accountant("rdp" | "prv")``),
a site's persisted :class:`~flaretune.privacy.budget.PrivacyBudget`, and noise planning
(:func:`~flaretune.privacy.accountants.noise_for_epsilon`). Opacus is imported only when ε is computed.
"""

from flaretune.privacy.accountants import (ACCOUNTANTS, Accountant, PRVAccountant, RDPAccountant, epsilon_for,
                                           make_accountant, noise_for_epsilon)
from flaretune.privacy.budget import BUDGET_FILE, BudgetExceededError, PrivacyBudget

__all__ = ["ACCOUNTANTS", "Accountant", "RDPAccountant", "PRVAccountant", "make_accountant", "epsilon_for",
           "noise_for_epsilon", "PrivacyBudget", "BudgetExceededError", "BUDGET_FILE"]
