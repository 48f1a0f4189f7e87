"""The event types reconciliation publishes, declared for the catalogue and the other plugins.

``imports`` publishes one per statement file imported, ``runs`` one per
completed run and, after it, one when open items pass the account's
``exceptions`` limits (an operator alert). Amounts are decimal strings.
"""

from __future__ import annotations

from tierd.core.registry import EventType, object_schema

from .imports import EVENT_IMPORTED
from .runs import EVENT_EXCEPTIONS, EVENT_RUN_COMPLETED

_STR = {"type": "string"}
_INT = {"type": "integer"}
_MONEY = {"type": "string", "description": "a decimal number as text, e.g. '-12.50'"}


EVENT_TYPES = [
    EventType(
        EVENT_IMPORTED,
        "A bank statement file was imported into an account (through the API, the CLI or an inbox).",
        data_schema=object_schema(
            ["import_id", "account", "format", "new", "duplicates", "rejected"],
            import_id=_STR,
            account=_STR,
            format=_STR,
            filename=_STR,
            statements={**_INT, "description": "statements in the file"},
            new={**_INT, "description": "lines added"},
            duplicates={**_INT, "description": "lines imported before"},
            rejected={**_INT, "description": "lines refused"},
            balances={
                "type": "array",
                "items": object_schema(
                    ["statement", "ok"],
                    statement=_STR,
                    opening=_MONEY,
                    closing=_MONEY,
                    lines_total=_MONEY,
                    computed_closing=_MONEY,
                    ok={"type": "boolean"},
                ),
            },
            balance_mismatches={**_INT, "description": "statements whose lines do not add up to their closing balance"},
        ),
        subject="Statement imported{% if data.account %} for {{ data.account }}{% endif %}",
        body="A bank statement{% if data.format %} ({{ data.format }}){% endif %}"
        "{% if data.filename %} from {{ data.filename }}{% endif %} was imported for tenant {{ tenant or '-' }}"
        "{{ (': ' ~ data.new ~ ' new line(s), ' ~ data.get('duplicates', 0) ~ ' duplicate(s), '"
        " ~ data.get('rejected', 0) ~ ' rejected') if data.new is defined else '' }}."
        "{{ ('\nWarning: ' ~ data.balance_mismatches ~ ' balance mismatch(es).')"
        " if data.balance_mismatches else '' }}",
    ),
    EventType(
        EVENT_RUN_COMPLETED,
        "A reconciliation run of an account completed (scheduled or asked for).",
        data_schema=object_schema(
            ["account", "run_id", "trigger", "counts"],
            account=_STR,
            run_id=_STR,
            trigger={"enum": ["api", "schedule"]},
            counts={
                "type": "object",
                "properties": {
                    key: _INT
                    for key in (
                        "matches",
                        "suggestions",
                        "skipped_conflicts",
                        "bank_lines_open_before",
                        "ledger_entries_open_before",
                        "bank_lines_matched",
                        "ledger_entries_matched",
                        "bank_lines_open",
                        "ledger_entries_open",
                    )
                }
                | {"by_rule": {"type": "object", "additionalProperties": _INT}},
            },
        ),
        subject="Reconciliation run completed{% if data.account %} for {{ data.account }}{% endif %}",
        body="{% set c = data.get('counts') or {} %}"
        "Reconciliation{% if data.run_id %} run {{ data.run_id }}{% endif %} for tenant {{ tenant or '-' }}"
        "{% if data.account %} on account {{ data.account }}{% endif %} completed:"
        " {{ c.get('matches', '?') }} match(es), {{ c.get('suggestions', 0) }} suggestion(s) to review;"
        " {{ c.get('bank_lines_open', '?') }} bank line(s) and {{ c.get('ledger_entries_open', '?') }}"
        " ledger entr(ies) still open.",
    ),
    EventType(
        EVENT_EXCEPTIONS,
        "After a run, open items of an account are older or larger than its exceptions limits.",
        data_schema=object_schema(
            ["account", "run_id", "count", "items"],
            account=_STR,
            run_id=_STR,
            count={**_INT, "description": "open items past the limits (items holds the first 50)"},
            max_age_days={"type": ["integer", "null"]},
            min_amount={"type": ["string", "null"]},
            items={
                "type": "array",
                "items": object_schema(
                    ["side", "id", "date", "amount", "age_days", "reasons"],
                    side={"enum": ["bank", "ledger"]},
                    id={"type": ["integer", "string"]},
                    date={**_STR, "format": "date"},
                    amount=_MONEY,
                    age_days=_INT,
                    reasons={"type": "array", "items": {"enum": ["age", "amount"]}},
                    reference=_STR,
                ),
            },
        ),
        severity="warning",
        operator_alert=True,
        subject="Reconciliation: {{ data.count if data.count is defined else 'new' }} exception(s)"
        "{% if data.account %} on {{ data.account }}{% endif %}",
        body="Reconciliation{% if data.run_id %} run {{ data.run_id }}{% endif %} for tenant {{ tenant or '-' }} "
        "left {{ data.count if data.count is defined else 'some' }} item(s) open past the limits"
        "{% if data.account %} on account {{ data.account }}{% endif %}"
        "{% if data.max_age_days %} (older than {{ data.max_age_days }} days"
        "{{ (' or at least ' ~ data.min_amount) if data.min_amount else '' }}){% endif %}.\n"
        "{% for item in (data.get('items') or [])[:20] %}- {{ item.side ~ ' ' if item.side else '' }}"
        "{{ item.date ~ ' ' if item.date else '' }}{{ item.reference or item.description or item.id }}"
        "{{ (' ' ~ item.amount ~ (' ' ~ item.currency if item.currency else ''))"
        " if item.amount is defined else '' }}"
        "{{ (', ' ~ item.age_days ~ ' days') if item.age_days is defined else '' }}\n{% endfor %}"
        "{{ ('... and ' ~ (data.count - 20) ~ ' more') if data.count is defined and data.count > 20 else '' }}",
    ),
]
