"""What reconciliation offers to reports: its sources and the reports it ships.

Amounts are ``Decimal`` text (type ``decimal``): reports sum them exactly.
Each source is one SELECT for SQLite and PostgreSQL alike: no JSON functions
(a run's figures have columns, migration 6), booleans as 0/1 from a CASE (a
comparison is a boolean on PostgreSQL, an integer on SQLite), sums cast back
to integers (PostgreSQL sums BIGINTs as NUMERIC), a REAL rounded as NUMERIC
(PostgreSQL's ``round`` takes no digits for a float).
"""

from __future__ import annotations

from tierd.core.registry import Column, ReportDefinition, ReportSource

LINES = ReportSource(
    name="reconciliation.lines",
    description="One row per imported bank statement line",
    sql="""SELECT l.tenant_id AS tenant, l.id AS line_id, l.account_id AS account, l.import_id AS import_id,
        l.booking_date AS booking_date, l.value_date AS value_date, l.amount AS amount, l.currency AS currency,
        l.counterparty_name AS counterparty, l.counterparty_account AS counterparty_account,
        l.remittance AS remittance, l.end_to_end_id AS end_to_end_id, l.bank_reference AS bank_reference,
        CASE WHEN l.match_id IS NULL THEN 0 ELSE 1 END AS matched, l.match_id AS match_id, l.created_at AS imported_at
    FROM recon_bank_lines l""",
    columns=(
        Column("line_id", "integer", "The line's id"),
        Column("account", "text", "The account it belongs to"),
        Column("import_id", "text", "The import that brought it"),
        Column("booking_date", "date", "Booking date"),
        Column("value_date", "date", "Value date"),
        Column("amount", "decimal", "Amount (negative: money out)"),
        Column("currency", "text", "Currency (ISO 4217)"),
        Column("counterparty", "text", "Counterparty's name"),
        Column("counterparty_account", "text", "Counterparty's account"),
        Column("remittance", "text", "Remittance information"),
        Column("end_to_end_id", "text", "End-to-end id"),
        Column("bank_reference", "text", "The bank's reference"),
        Column("matched", "boolean", "Matched (else open)"),
        Column("match_id", "text", "The match that closed it"),
        Column("imported_at", "instant", "When it was imported"),
    ),
)

LEDGER = ReportSource(
    name="reconciliation.ledger",
    description="One row per ledger entry",
    sql="""SELECT e.tenant_id AS tenant, e.id AS entry_id, e.account_id AS account, e.external_id AS external_id,
        e.date AS date, e.amount AS amount, e.currency AS currency, e.counterparty AS counterparty,
        e.reference AS reference, e.description AS description,
        CASE WHEN e.match_id IS NULL THEN 0 ELSE 1 END AS matched,
        e.match_id AS match_id, e.created_at AS created_at
    FROM recon_ledger_entries e""",
    columns=(
        Column("entry_id", "integer", "The entry's id"),
        Column("account", "text", "The account it belongs to"),
        Column("external_id", "text", "Its id in the ledger"),
        Column("date", "date", "Its date"),
        Column("amount", "decimal", "Amount"),
        Column("currency", "text", "Currency (ISO 4217)"),
        Column("counterparty", "text", "Counterparty"),
        Column("reference", "text", "Reference"),
        Column("description", "text", "Description"),
        Column("matched", "boolean", "Matched (else open)"),
        Column("match_id", "text", "The match that closed it"),
        Column("created_at", "instant", "When it was recorded"),
    ),
)

OPEN_ITEMS = ReportSource(
    name="reconciliation.open_items",
    description="Open items of both sides: statement lines and ledger entries not matched",
    sql="""SELECT l.tenant_id AS tenant, 'statement' AS side, l.account_id AS account, l.id AS item_id,
        l.booking_date AS date, l.amount AS amount, l.currency AS currency, l.counterparty_name AS counterparty,
        l.remittance AS reference
    FROM recon_bank_lines l WHERE l.match_id IS NULL
    UNION ALL
    SELECT e.tenant_id, 'ledger', e.account_id, e.id, e.date, e.amount, e.currency, e.counterparty, e.reference
    FROM recon_ledger_entries e WHERE e.match_id IS NULL""",
    columns=(
        Column("side", "text", "statement (a bank line) or ledger (an entry)"),
        Column("account", "text", "The account"),
        Column("item_id", "integer", "The line's or entry's id"),
        Column("date", "date", "Booking date (lines) or date (entries)"),
        Column("amount", "decimal", "Amount"),
        Column("currency", "text", "Currency (ISO 4217)"),
        Column("counterparty", "text", "Counterparty"),
        Column("reference", "text", "Remittance information (lines) or reference (entries)"),
    ),
)

MATCHES = ReportSource(
    name="reconciliation.matches",
    description="One row per match (automatic, made by hand, or an accepted suggestion)",
    sql="""SELECT m.tenant_id AS tenant, m.id AS match_id, m.account_id AS account, m.run_id AS run_id,
        m.kind AS kind, m.rule AS rule, CAST(ROUND(CAST(m.score AS NUMERIC), 4) AS TEXT) AS score,
        m.adjustment AS adjustment, m.status AS status,
        m.created_at AS created_at, m.created_by AS created_by, m.undone_at AS undone_at,
        (SELECT COUNT(*) FROM recon_match_items i WHERE i.match_id = m.id AND i.side = 'bank') AS statement_lines,
        (SELECT COUNT(*) FROM recon_match_items i WHERE i.match_id = m.id AND i.side = 'ledger') AS ledger_entries
    FROM recon_matches m""",
    columns=(
        Column("match_id", "text", "The match's id"),
        Column("account", "text", "The account"),
        Column("run_id", "text", "The run that made it or suggested it (empty: made by hand)"),
        Column("kind", "text", "auto, manual or accepted (a suggestion accepted)"),
        Column("rule", "text", "The rule that matched"),
        Column("score", "decimal", "The rule's score (0 to 1)"),
        Column("adjustment", "decimal", "Difference booked to close it"),
        Column("status", "text", "active or undone"),
        Column("created_at", "instant", "When it was made"),
        Column("created_by", "text", "Who made it"),
        Column("undone_at", "instant", "When it was undone"),
        Column("statement_lines", "integer", "Statement lines it closes"),
        Column("ledger_entries", "integer", "Ledger entries it closes"),
    ),
)

#: A run's figures (its counts, and the statement lines imported since the run before it).
_RUN_COLUMNS = """r.tenant_id AS tenant, r.id AS run_id, r.account_id AS account, r.status AS status,
        r.trigger AS trigger, r.started_at AS started_at, r.finished_at AS finished_at, r.error AS error,
        (SELECT CAST(COALESCE(SUM(i.new_lines), 0) AS BIGINT) FROM recon_imports i
         WHERE i.tenant_id = r.tenant_id AND i.account_id = r.account_id AND i.created_at <= r.started_at
           AND i.created_at > COALESCE((SELECT MAX(p.started_at) FROM recon_runs p WHERE p.tenant_id = r.tenant_id
               AND p.account_id = r.account_id AND p.started_at < r.started_at), -1)) AS lines_imported,
        r.lines_considered AS lines_considered, r.entries_considered AS entries_considered,
        r.auto_matches AS auto_matches, r.lines_matched AS lines_matched, r.entries_matched AS entries_matched,
        r.suggestions AS suggestions, r.lines_open AS lines_open, r.entries_open AS entries_open"""

_RUN_COLUMN_DECLS = (
    Column("run_id", "text", "The run's id"),
    Column("account", "text", "The account"),
    Column("status", "text", "running, completed or failed"),
    Column("trigger", "text", "api, schedule or cli"),
    Column("started_at", "instant", "When it started"),
    Column("finished_at", "instant", "When it finished"),
    Column("error", "text", "Why it failed"),
    Column("lines_imported", "integer", "Statement lines imported since the account's run before"),
    Column("lines_considered", "integer", "Open statement lines when it started"),
    Column("entries_considered", "integer", "Open ledger entries when it started"),
    Column("auto_matches", "integer", "Matches it made"),
    Column("lines_matched", "integer", "Statement lines it matched"),
    Column("entries_matched", "integer", "Ledger entries it matched"),
    Column("suggestions", "integer", "Suggestions it left for people"),
    Column("lines_open", "integer", "Statement lines still open after it"),
    Column("entries_open", "integer", "Ledger entries still open after it"),
)

RUNS = ReportSource(
    name="reconciliation.runs",
    description="One row per reconciliation run, with its figures",
    sql=f"SELECT {_RUN_COLUMNS}\n    FROM recon_runs r",
    columns=_RUN_COLUMN_DECLS,
)

#: The start of the account's next run (matches made by hand until then belong to this one).
_NEXT_RUN = (
    "COALESCE((SELECT MIN(q.started_at) FROM recon_runs q WHERE q.tenant_id = r.tenant_id"
    " AND q.account_id = r.account_id AND q.started_at > r.started_at), 1e18)"
)

RUN_MATCHES = ReportSource(
    name="reconciliation.run_matches",
    description=(
        "Each run with the matches that belong to it: those it made, its suggestions people accepted, and "
        "those made by hand until the account's next run (a run without any: one row, match columns empty)"
    ),
    sql=f"""SELECT {_RUN_COLUMNS}, m.id AS match_id, m.kind AS match_kind, m.adjustment AS adjustment
    FROM recon_runs r LEFT JOIN recon_matches m
        ON m.tenant_id = r.tenant_id AND m.run_id = r.id AND m.status = 'active'
    UNION ALL
    SELECT {_RUN_COLUMNS}, m.id, m.kind, m.adjustment
    FROM recon_runs r JOIN recon_matches m
        ON m.tenant_id = r.tenant_id AND m.account_id = r.account_id AND m.status = 'active' AND m.run_id IS NULL
        AND m.created_at >= r.started_at AND m.created_at < {_NEXT_RUN}""",
    columns=(
        *_RUN_COLUMN_DECLS,
        Column("match_id", "text", "A match of the run"),
        Column("match_kind", "text", "auto, accepted (a suggestion of the run) or manual (made by hand)"),
        Column("adjustment", "decimal", "The match's adjustment"),
    ),
)

SOURCES = (LINES, LEDGER, OPEN_ITEMS, MATCHES, RUNS, RUN_MATCHES)

RECONCILIATION_SUMMARY = ReportDefinition(
    name="reconciliation_summary",
    spec={
        "title": "Reconciliation per account and run",
        "description": (
            "Each run of the period: statement lines imported before it, matched by the run and by hand, "
            "suggestions, what stays open, the run's match rate and the adjustments booked"
        ),
        "source": "reconciliation.run_matches",
        "parameters": {
            "from": {"type": "date", "default": "last_30_days", "description": "First day"},
            "to": {"type": "date", "default": "today", "description": "Last day (included)"},
            "account": {"type": "text", "description": "Only this account"},
        },
        "filters": ["started_at >= :from", "started_at <= :to", "account = :account"],
        "columns": [
            "account",
            "run_id",
            "started_at",
            "status",
            "lines_imported",
            {"name": "auto_matched", "expr": "count(match_kind = 'auto')", "description": "Matches the run made"},
            {
                "name": "matched_by_hand",
                "expr": "count(match_kind in ('manual', 'accepted'))",
                "description": "Matches made by people (its suggestions accepted, by hand until the next run)",
            },
            "suggestions",
            "lines_open",
            "entries_open",
            {
                "name": "match_rate",
                "expr": "round(lines_matched / lines_considered, 4)",
                "description": "Statement lines the run matched out of those open (0 to 1)",
            },
            {
                "name": "adjustments_total",
                "expr": "coalesce(sum(adjustment), 0)",
                "description": "Adjustments of the run's matches",
            },
        ],
        "group_by": [
            "account",
            "run_id",
            "started_at",
            "status",
            "lines_imported",
            "suggestions",
            "lines_open",
            "entries_open",
            "lines_matched",
            "lines_considered",
        ],
        "order_by": ["account", "started_at"],
    },
)

OPEN_ITEMS_AGING = ReportDefinition(
    name="open_items_aging",
    spec={
        "title": "Open items by age",
        "description": "Statement lines and ledger entries not matched, by age in days: count and amount per currency",
        "source": "reconciliation.open_items",
        "parameters": {
            "account": {"type": "text", "description": "Only this account"},
            "currency": {"type": "text", "description": "Only this currency"},
            "from": {"type": "date", "description": "Only items dated from this day"},
            "to": {"type": "date", "description": "Only items dated until this day (included)"},
        },
        "filters": ["account = :account", "currency = :currency", "date >= :from", "date <= :to"],
        "columns": [
            "side",
            "currency",
            {
                "name": "age",
                "expr": (
                    "case when age_days(date) <= 7 then '0-7' when age_days(date) <= 30 then '8-30'"
                    " when age_days(date) <= 60 then '31-60' when age_days(date) <= 90 then '61-90' else '>90' end"
                ),
                "description": "Age in days since its date: 0-7, 8-30, 31-60, 61-90, >90",
            },
            {"name": "items", "expr": "count()", "description": "Open items"},
            {"name": "amount", "expr": "sum(amount)", "description": "Their total (exact)"},
        ],
        "group_by": ["side", "currency", "age"],
        "order_by": ["side", "currency", "min(age_days(date))"],
    },
)

REPORTS = (RECONCILIATION_SUMMARY, OPEN_ITEMS_AGING)
