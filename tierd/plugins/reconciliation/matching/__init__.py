"""The matching engine: pure functions from open items to matches.

No database, no asyncio. ``reconcile()`` takes bank lines and ledger entries
(:mod:`.model`) and a configuration, and returns automatic matches and
suggestions, each with its rule, score and a sentence that explains it.
"""

from .engine import RuleConfigError, check_rules, reconcile
from .model import DEFAULT_RULES, BankLine, EngineConfig, LedgerEntry, Match, Result, Suggestion
from .rules import RULES

__all__ = [
    "DEFAULT_RULES",
    "RULES",
    "BankLine",
    "EngineConfig",
    "LedgerEntry",
    "Match",
    "Result",
    "RuleConfigError",
    "Suggestion",
    "check_rules",
    "reconcile",
]
