"""The ``reconciliation`` configuration section: its schema and how it is read.

Accounts can come from this file or from the API; both end up as rows in
``recon_accounts``. The per-account matching settings (rules, thresholds,
schedule, inbox, exception limits) live only in the file, which is where an
operator reviews them.
"""

from __future__ import annotations

import re
from decimal import Decimal

from tierd.core.schema import Bool, Cron, Duration, Float, Int, List, Map, Obj, Str
from tierd.core.schema import Decimal as DecimalField

from .importers.base import CURRENCY_RE
from .importers.csv import FIELDS as CSV_FIELDS
from .importers.csv import layout_problems
from .ledger import FIELDS as LEDGER_FIELDS
from .matching import DEFAULT_RULES, EngineConfig
from .matching.model import RULE_DEFAULTS
from .matching.rules import RULES

ACCOUNT_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ACCOUNT_ID_RE = re.compile(ACCOUNT_ID)

_LAYOUT_COMMON = {
    "delimiter": Str(default=",", min_len=1, doc="Field separator (one character)"),
    "quotechar": Str(default='"', min_len=1, doc="Quote character"),
    "encoding": Str(default="utf-8", doc="Text encoding (utf-8, cp1252, latin-1 ...); a BOM wins"),
    "decimal": Str(default=".", choices=[".", ","], doc="Decimal mark of amounts"),
    "date_format": Str(default="%Y-%m-%d", doc="strptime format of dates"),
    "skip_rows": Int(default=0, min=0, doc="Rows before the header row (bank banners)"),
}

CSV_FORMAT = Obj(
    {
        **_LAYOUT_COMMON,
        "columns": Obj({name: Str() for name in CSV_FIELDS}, required=True, doc="Field -> header name"),
    },
    check=lambda v: [(("columns",), p) for p in layout_problems(v)],
)

LEDGER_FORMAT = Obj(
    {
        **_LAYOUT_COMMON,
        "columns": Obj({name: Str() for name in LEDGER_FIELDS}, required=True, doc="Field -> header name"),
    },
    check=lambda v: [
        (("columns",), f"columns.{f} is required")
        for f in ("external_id", "date", "amount")
        if not (v["columns"] or {}).get(f)
    ],
)

#: The parameters each built-in rule reads (besides ``rule``, ``auto`` and
#: ``auto_threshold``, which every rule takes). A parameter given to a rule
#: that does not read it is an error: it would silently change nothing.
RULE_PARAMS: dict[str, tuple[str, ...]] = {name: tuple(defaults) for name, defaults in RULE_DEFAULTS.items()}
_EVERY_RULE = ("rule", "auto", "auto_threshold")


def _rule_check(rule: dict) -> list:
    """Parameters the rule does not read, and tolerances that contradict each other."""
    errors: list = []
    known = RULE_PARAMS.get(rule["rule"])
    if known is not None:
        for key, value in rule.items():
            if value is not None and key not in known and key not in _EVERY_RULE:
                errors.append(
                    ((key,), f"not a parameter of rule {rule['rule']!r} (it takes: {', '.join(sorted(known))})")
                )
    for strict, wide in (("single_absolute", "absolute"), ("single_percent", "percent")):
        if rule.get(strict) is not None and rule.get(wide) is not None and rule[strict] > rule[wide]:
            errors.append(((strict,), f"must not exceed {wide} ({rule[wide]}): it is the tolerance with less evidence"))
    return errors


RULE = Obj(
    {
        "rule": Str(required=True, choices=list(RULES), doc="Which built-in rule"),
        "window_days": Int(
            min=0, max=366, doc="Days the two sides may be apart (batch: days an invoice may precede the payment)"
        ),
        "days_after": Int(
            min=0, max=366, doc="amount_date/fuzzy_counterparty/batch: days the ledger side may follow the bank line"
        ),
        "ref_window_days": Int(
            min=0, max=366, doc="tolerance/partial: days a bank line naming the invoice may be apart from it"
        ),
        "min_similarity": Float(min=0, max=100, doc="Counterparty name similarity, 0-100"),
        "max_items": Int(min=2, max=8, doc="batch/partial: most items in one sum"),
        "max_pool": Int(min=2, max=30, doc="batch/partial: items considered per target"),
        "budget": Int(min=100, max=1_000_000, doc="batch/partial: search steps per target before giving up"),
        "absolute": DecimalField(min=0, doc="tolerance: largest absolute difference (reference and name agree)"),
        "percent": Float(min=0, max=100, doc="tolerance: largest difference in percent (reference and name agree)"),
        "single_absolute": DecimalField(min=0, doc="tolerance: largest absolute difference with one piece of evidence"),
        "single_percent": Float(min=0, max=100, doc="tolerance: largest percent with one piece of evidence"),
        "rate_tolerance": Float(min=0, max=100, doc="fx: percent the converted entry may miss the booked amount by"),
        "auto": Bool(doc="false: this rule only suggests"),
        "auto_threshold": Float(min=0, max=1, doc="Score needed for an automatic match by this rule"),
    },
    check=_rule_check,
)

EXCEPTIONS = Obj(
    {
        "max_age_days": Int(default=30, min=0, doc="Open items older than this are exceptions"),
        "min_amount": DecimalField(default=None, min=0, doc="Open items at least this large are exceptions"),
    }
)


def _account_check(acct: dict) -> list:
    errors = []
    if acct.get("currency") and not CURRENCY_RE.fullmatch(acct["currency"]):
        errors.append((("currency",), "expected an ISO 4217 code such as EUR"))
    return errors


ACCOUNT = Obj(
    {
        "id": Str(required=True, pattern=ACCOUNT_ID, doc="Account id, unique per tenant"),
        "tenant": Str(required=True, min_len=1, doc="Tenant the account belongs to"),
        "name": Str(default="", doc="Display name"),
        "currency": Str(required=True, doc="ISO 4217 currency of the account"),
        "iban": Str(default="", doc="IBAN; statements for another IBAN are refused"),
        "account_number": Str(default="", doc="Account number (MT940 :25:, OFX ACCTID)"),
        "csv_format": Str(default=None, doc="Name of a csv_formats layout for CSV statements"),
        "ledger_format": Str(default=None, doc="Name of a ledger_formats layout for CSV ledger uploads"),
        "rules": List(RULE, default=None, doc="Ordered rule passes (default: all built-in rules)"),
        "auto_threshold": Float(default=0.85, min=0, max=1, doc="Score needed for an automatic match"),
        "min_margin": Float(default=0.05, min=0, max=1, doc="Lead needed over the runner-up"),
        "schedule": Cron(default=None, doc="Cron expression for scheduled runs (UTC)"),
        "inbox": Str(default=None, doc="Folder watched for statement files"),
        "exceptions": EXCEPTIONS,
    },
    check=_account_check,
)


def _section_check(section: dict) -> list:
    errors = []
    seen = set()
    for i, acct in enumerate(section["accounts"]):
        key = (acct["tenant"], acct["id"])
        if key in seen:
            errors.append(
                (("accounts", i, "id"), f"account {acct['id']!r} appears twice for tenant {acct['tenant']!r}")
            )
        seen.add(key)
        for field, table in (("csv_format", "csv_formats"), ("ledger_format", "ledger_formats")):
            if acct.get(field) and acct[field] not in section[table]:
                errors.append((("accounts", i, field), f"no {table} entry named {acct[field]!r}"))
    return errors


SCHEMA = Obj(
    {
        "max_statement_size": Int(default=50 * 1024 * 1024, min=1024, doc="Largest statement upload, in bytes"),
        "inbox_poll_interval": Duration(default="10s", doc="How often inbox folders are looked at"),
        "csv_formats": Map(CSV_FORMAT, default={}, doc="Named CSV statement layouts"),
        "ledger_formats": Map(LEDGER_FORMAT, default={}, doc="Named CSV ledger layouts"),
        "accounts": List(ACCOUNT, default=[], doc="Accounts defined in this file"),
    },
    check=_section_check,
)


def section(config: dict) -> dict:
    """The validated section, or its defaults when the file has none."""
    return config.get("reconciliation") or SCHEMA.validate({})


class UnknownLayout(LookupError):
    """An account or a request names a CSV layout that the configuration does not define."""


def layout(cfg: dict, table: str, name: str | None) -> dict | None:
    """The layout ``name`` of ``cfg[table]`` (``csv_formats`` or ``ledger_formats`` of a
    validated section); None when no name is given.

    Config accounts name only layouts the file defines (the schema checks it),
    but an account created by API keeps its name when a reload removes the layout.
    """
    if not name:
        return None
    if name not in cfg[table]:
        raise UnknownLayout(f"no reconciliation.{table} entry named {name!r}")
    return cfg[table][name]


def account_settings(config: dict, tenant: str, account_id: str) -> dict | None:
    """The configured entry of an account (None for accounts created by API)."""
    for acct in section(config)["accounts"]:
        if acct["tenant"] == tenant and acct["id"] == account_id:
            return acct
    return None


def engine_config(settings: dict | None) -> EngineConfig:
    """The matching configuration of an account (defaults when not configured)."""
    if not settings:
        return EngineConfig()
    rules = settings.get("rules") or [dict(r) for r in DEFAULT_RULES]
    clean = [{k: (str(v) if isinstance(v, Decimal) else v) for k, v in r.items() if v is not None} for r in rules]
    return EngineConfig(rules=clean, auto_threshold=settings["auto_threshold"], min_margin=settings["min_margin"])
