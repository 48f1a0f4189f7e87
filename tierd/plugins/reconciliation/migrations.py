"""The reconciliation tables, as numbered migrations (applied in order, never edited once released).

Migration 3 gives the current shape of every table: instants are ``REAL``
unix seconds (the house convention, see docs/plugin-api.md), calendar dates
``YYYY-MM-DD`` text, money ``str(Decimal)`` text.

Two lists, numbered alike (see :func:`tierd.core.storage.migrations_for`):
``MIGRATIONS`` for SQLite (applied by existing databases: never edit one,
append) and ``POSTGRESQL_MIGRATIONS``, where version N builds the same tables,
columns and indexes as SQLite's version N, in the same column order, with
PostgreSQL's types (``tierd db copy`` moves rows table by table).
"""

from __future__ import annotations

MIGRATIONS = [
    # 1: accounts, imports, both sides of the ledger, runs, matches, suggestions, audit.
    """
    CREATE TABLE recon_accounts (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        currency TEXT NOT NULL,
        iban TEXT NOT NULL DEFAULT '',
        account_number TEXT NOT NULL DEFAULT '',
        csv_format TEXT,
        ledger_format TEXT,
        source TEXT NOT NULL,              -- 'config' or 'api'
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    );
    CREATE TABLE recon_imports (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        filename TEXT NOT NULL DEFAULT '',
        format TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        new_lines INTEGER NOT NULL,
        duplicate_lines INTEGER NOT NULL,
        rejected_lines INTEGER NOT NULL,
        report TEXT NOT NULL,              -- JSON: balances, rejected reasons
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE INDEX recon_imports_account ON recon_imports(tenant_id, account_id, created_at);
    CREATE TABLE recon_bank_lines (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        import_id TEXT NOT NULL,
        booking_date TEXT NOT NULL,
        value_date TEXT,
        amount TEXT NOT NULL,
        currency TEXT NOT NULL,
        counterparty_name TEXT NOT NULL DEFAULT '',
        counterparty_account TEXT NOT NULL DEFAULT '',
        remittance TEXT NOT NULL DEFAULT '',
        end_to_end_id TEXT NOT NULL DEFAULT '',
        bank_reference TEXT NOT NULL DEFAULT '',
        dedup_key TEXT NOT NULL,
        raw TEXT NOT NULL DEFAULT '',
        location TEXT NOT NULL DEFAULT '',
        match_id TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (tenant_id, account_id, dedup_key)
    );
    CREATE INDEX recon_bank_open ON recon_bank_lines(tenant_id, account_id, match_id, booking_date);
    CREATE TABLE recon_ledger_entries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        external_id TEXT NOT NULL,
        date TEXT NOT NULL,
        amount TEXT NOT NULL,
        currency TEXT NOT NULL,
        counterparty TEXT NOT NULL DEFAULT '',
        reference TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        match_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (tenant_id, account_id, external_id)
    );
    CREATE INDEX recon_ledger_open ON recon_ledger_entries(tenant_id, account_id, match_id, date);
    CREATE TABLE recon_runs (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        status TEXT NOT NULL,              -- running, completed, failed
        trigger TEXT NOT NULL,             -- api, schedule, cli
        started_at TEXT NOT NULL,
        finished_at TEXT,
        counts TEXT NOT NULL DEFAULT '{}',
        error TEXT
    );
    CREATE INDEX recon_runs_account ON recon_runs(tenant_id, account_id, started_at);
    CREATE TABLE recon_matches (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        run_id TEXT,
        kind TEXT NOT NULL,                -- auto, manual, accepted
        rule TEXT NOT NULL,
        score REAL NOT NULL,
        explanation TEXT NOT NULL,
        adjustment TEXT NOT NULL DEFAULT '0',
        status TEXT NOT NULL,              -- active, undone
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        undone_at TEXT,
        undone_by TEXT
    );
    CREATE INDEX recon_matches_account ON recon_matches(tenant_id, account_id, status, created_at);
    CREATE INDEX recon_matches_run ON recon_matches(tenant_id, run_id);
    CREATE TABLE recon_match_items (
        match_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        side TEXT NOT NULL,                -- bank, ledger
        item_id INTEGER NOT NULL,
        PRIMARY KEY (match_id, side, item_id)
    );
    CREATE TABLE recon_suggestions (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        score REAL NOT NULL,
        explanation TEXT NOT NULL,
        adjustment TEXT NOT NULL DEFAULT '0',
        bank_ids TEXT NOT NULL,            -- JSON list of line ids
        ledger_ids TEXT NOT NULL,          -- JSON list of entry ids
        status TEXT NOT NULL,              -- open, accepted, stale
        created_at TEXT NOT NULL,
        decided_at TEXT,
        decided_by TEXT
    );
    CREATE INDEX recon_suggestions_account ON recon_suggestions(tenant_id, account_id, status);
    CREATE TABLE recon_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object_id TEXT NOT NULL DEFAULT '',
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX recon_audit_account ON recon_audit(tenant_id, account_id, id);
    """,
]

#: Every column holding a time, by table.
TIME_COLUMNS = {
    "recon_accounts": ("created_at", "updated_at"),
    "recon_imports": ("created_at",),
    "recon_bank_lines": ("created_at",),
    "recon_ledger_entries": ("created_at", "updated_at"),
    "recon_runs": ("started_at", "finished_at"),
    "recon_matches": ("created_at", "undone_at"),
    "recon_suggestions": ("created_at", "decided_at"),
    "recon_audit": ("at",),
}
# 2: times written before as datetime.isoformat() ("...12:00:00+00:00", no
# fraction when it was 0) take core's form ("...12:00:00.000000Z").
MIGRATIONS.append(
    "".join(
        f"UPDATE {table} SET {col} = replace({col}, '+00:00', CASE WHEN {col} LIKE '%.%' THEN 'Z' ELSE '.000000Z' END)"
        f" WHERE {col} LIKE '%+00:00';\n"
        for table, cols in TIME_COLUMNS.items()
        for col in cols
    )
)


def _unix(col: str) -> str:
    """SQL: the ISO text of ``col`` as unix seconds (NULL stays NULL).

    Every time migration 2 left is core's ``YYYY-MM-DDTHH:MM:SS.ffffffZ``:
    whole seconds and microseconds are added as integers and divided once,
    so the REAL is exactly what :func:`tierd.core.clock.parse_iso` gives and
    :func:`tierd.core.clock.iso` shows the same text as before (SQLite's own
    date functions keep milliseconds only). Any other form SQLite can read
    goes through ``julianday``, to the millisecond.
    """
    return (
        f"CASE WHEN {col} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
        f".[0-9][0-9][0-9][0-9][0-9][0-9]Z'"
        f" THEN (CAST(strftime('%s', substr({col}, 1, 19)) AS INTEGER) * 1000000"
        f" + CAST(substr({col}, 21, 6) AS INTEGER)) / 1000000.0"
        f" ELSE (julianday({col}) - 2440587.5) * 86400.0 END"
    )


def _rebuild(table: str, create: str, indexes: str = "", autoincrement: bool = False) -> str:
    """SQL that rebuilds ``table`` as ``create`` says, its rows copied with every
    instant column (``_INSTANTS``) turned into unix seconds.

    SQLite cannot change a column's type, and a REAL written into a TEXT column
    is stored as text: the table is made anew (the old one renamed aside first,
    so the new one is created under its own name), copied, dropped; its
    AUTOINCREMENT counter carries over so ids are never reused.
    """
    names = [
        line.split()[0] for line in create.strip().splitlines()[1:-1] if line.split()[0] not in ("PRIMARY", "UNIQUE")
    ]
    select = ", ".join(_unix(n) if n in _INSTANTS[table] else n for n in names)
    sql = (
        f"ALTER TABLE {table} RENAME TO {table}_v2;\n{create.strip()};\n"
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM {table}_v2;\n"
    )
    if autoincrement:
        sql += (
            f"DELETE FROM sqlite_sequence WHERE name = '{table}';\n"
            f"INSERT INTO sqlite_sequence (name, seq) SELECT '{table}', seq FROM sqlite_sequence"
            f" WHERE name = '{table}_v2';\n"
        )
    return sql + f"DROP TABLE {table}_v2;\n{indexes.strip()}\n"


#: The instant columns of each table in migration 3 (a frozen copy: later
#: migrations must not change what migration 3 did).
_INSTANTS = {
    "recon_accounts": ("created_at", "updated_at"),
    "recon_imports": ("created_at",),
    "recon_bank_lines": ("created_at",),
    "recon_ledger_entries": ("created_at", "updated_at"),
    "recon_runs": ("started_at", "finished_at"),
    "recon_matches": ("created_at", "undone_at"),
    "recon_suggestions": ("created_at", "decided_at"),
    "recon_audit": ("at",),
}

# 3: instants become REAL unix seconds, as webhooks and notifications store
# them (cheap to compare, index and join); the API still answers ISO text.
MIGRATIONS.append(
    "".join(
        [
            _rebuild(
                "recon_accounts",
                """
    CREATE TABLE recon_accounts (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        currency TEXT NOT NULL,
        iban TEXT NOT NULL DEFAULT '',
        account_number TEXT NOT NULL DEFAULT '',
        csv_format TEXT,
        ledger_format TEXT,
        source TEXT NOT NULL,              -- 'config' or 'api'
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, id)
    )""",
            ),
            _rebuild(
                "recon_imports",
                """
    CREATE TABLE recon_imports (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        filename TEXT NOT NULL DEFAULT '',
        format TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        new_lines INTEGER NOT NULL,
        duplicate_lines INTEGER NOT NULL,
        rejected_lines INTEGER NOT NULL,
        report TEXT NOT NULL,              -- JSON: balances, rejected reasons
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL
    )""",
                "CREATE INDEX recon_imports_account ON recon_imports(tenant_id, account_id, created_at);",
            ),
            _rebuild(
                "recon_bank_lines",
                """
    CREATE TABLE recon_bank_lines (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        import_id TEXT NOT NULL,
        booking_date TEXT NOT NULL,
        value_date TEXT,
        amount TEXT NOT NULL,
        currency TEXT NOT NULL,
        counterparty_name TEXT NOT NULL DEFAULT '',
        counterparty_account TEXT NOT NULL DEFAULT '',
        remittance TEXT NOT NULL DEFAULT '',
        end_to_end_id TEXT NOT NULL DEFAULT '',
        bank_reference TEXT NOT NULL DEFAULT '',
        dedup_key TEXT NOT NULL,
        raw TEXT NOT NULL DEFAULT '',
        location TEXT NOT NULL DEFAULT '',
        match_id TEXT,
        created_at REAL NOT NULL,
        UNIQUE (tenant_id, account_id, dedup_key)
    )""",
                "CREATE INDEX recon_bank_open ON recon_bank_lines(tenant_id, account_id, match_id, booking_date);",
                autoincrement=True,
            ),
            _rebuild(
                "recon_ledger_entries",
                """
    CREATE TABLE recon_ledger_entries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        external_id TEXT NOT NULL,
        date TEXT NOT NULL,
        amount TEXT NOT NULL,
        currency TEXT NOT NULL,
        counterparty TEXT NOT NULL DEFAULT '',
        reference TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        match_id TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (tenant_id, account_id, external_id)
    )""",
                "CREATE INDEX recon_ledger_open ON recon_ledger_entries(tenant_id, account_id, match_id, date);",
                autoincrement=True,
            ),
            _rebuild(
                "recon_runs",
                """
    CREATE TABLE recon_runs (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        status TEXT NOT NULL,              -- running, completed, failed
        trigger TEXT NOT NULL,             -- api, schedule, cli
        started_at REAL NOT NULL,
        finished_at REAL,
        counts TEXT NOT NULL DEFAULT '{}',
        error TEXT
    )""",
                "CREATE INDEX recon_runs_account ON recon_runs(tenant_id, account_id, started_at);",
            ),
            _rebuild(
                "recon_matches",
                """
    CREATE TABLE recon_matches (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        run_id TEXT,
        kind TEXT NOT NULL,                -- auto, manual, accepted
        rule TEXT NOT NULL,
        score REAL NOT NULL,
        explanation TEXT NOT NULL,
        adjustment TEXT NOT NULL DEFAULT '0',
        status TEXT NOT NULL,              -- active, undone
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        undone_at REAL,
        undone_by TEXT
    )""",
                """
    CREATE INDEX recon_matches_account ON recon_matches(tenant_id, account_id, status, created_at);
    CREATE INDEX recon_matches_run ON recon_matches(tenant_id, run_id);""",
            ),
            _rebuild(
                "recon_suggestions",
                """
    CREATE TABLE recon_suggestions (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        score REAL NOT NULL,
        explanation TEXT NOT NULL,
        adjustment TEXT NOT NULL DEFAULT '0',
        bank_ids TEXT NOT NULL,            -- JSON list of line ids
        ledger_ids TEXT NOT NULL,          -- JSON list of entry ids
        status TEXT NOT NULL,              -- open, accepted, stale
        created_at REAL NOT NULL,
        decided_at REAL,
        decided_by TEXT
    )""",
                "CREATE INDEX recon_suggestions_account ON recon_suggestions(tenant_id, account_id, status);",
            ),
            _rebuild(
                "recon_audit",
                """
    CREATE TABLE recon_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object_id TEXT NOT NULL DEFAULT '',
        details TEXT NOT NULL DEFAULT '{}'
    )""",
                "CREATE INDEX recon_audit_account ON recon_audit(tenant_id, account_id, id);",
                autoincrement=True,
            ),
        ]
    )
)

# 4: pages whose cost stays flat as the tables grow (issue 16). Each paged list walks
# an index in its sort order (id) from the cursor and stops after ``limit`` rows:
# - imports of an account: (tenant_id, account_id, id), in place of the same on created_at
#   (ids ascend with creation time; nothing read imports by created_at);
# - matches of an account by status (the API always names one: active by default; undone
#   ones are few): (tenant_id, account_id, status, id), in place of the same on created_at;
# - matches and suggestions of a run: (tenant_id, run_id, id) (the matches' in place of
#   (tenant_id, run_id)); a run's ?status= is checked on the way: a run's rows are one
#   run's worth, however long the history grows;
# - suggestions of an account by status (open by default, the few of the last run):
#   (tenant_id, account_id, status, id), in place of the same without id, which also
#   serves marking a run's predecessors stale; and ?status=all: (tenant_id, account_id, id);
# - the audit walks recon_audit_account (tenant_id, account_id, id) from migration 1.
# Matches and suggestions are written by runs and people, not on an intake path: the
# one index added (suggestions of an account in id order) costs a run little.
MIGRATIONS.append(
    """
    DROP INDEX recon_imports_account;
    CREATE INDEX recon_imports_account ON recon_imports(tenant_id, account_id, id);
    DROP INDEX recon_matches_account;
    CREATE INDEX recon_matches_account ON recon_matches(tenant_id, account_id, status, id);
    DROP INDEX recon_matches_run;
    CREATE INDEX recon_matches_run ON recon_matches(tenant_id, run_id, id);
    DROP INDEX recon_suggestions_account;
    CREATE INDEX recon_suggestions_account ON recon_suggestions(tenant_id, account_id, status, id);
    CREATE INDEX recon_suggestions_account_id ON recon_suggestions(tenant_id, account_id, id);
    CREATE INDEX recon_suggestions_run ON recon_suggestions(tenant_id, run_id, id);
    """
)


# 5 (issue 13): payments instructed in another currency, and what reviewers taught.
# - A statement line keeps the amount and currency the payer instructed and the
#   bank's rate (NULL/'' when the bank says nothing); a match or suggestion made
#   through a rate keeps it (booked = ledger amount x rate + adjustment).
# - recon_aliases: "this bank counterparty (IBAN, or name when the bank gives no
#   IBAN) paid for that ledger counterparty", learned from matches, per account;
#   ``times`` counts the active matches that taught it. recon_alias_sources says
#   which match taught which alias, so undoing a match forgets exactly its share.
MIGRATIONS.append(
    """
    ALTER TABLE recon_bank_lines ADD COLUMN instructed_amount TEXT;
    ALTER TABLE recon_bank_lines ADD COLUMN instructed_currency TEXT NOT NULL DEFAULT '';
    ALTER TABLE recon_bank_lines ADD COLUMN exchange_rate TEXT;
    ALTER TABLE recon_matches ADD COLUMN exchange_rate TEXT;
    ALTER TABLE recon_suggestions ADD COLUMN exchange_rate TEXT;
    CREATE TABLE recon_aliases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        bank_key TEXT NOT NULL,            -- 'iban:DE89...' or 'name:<normalised name>'
        bank_label TEXT NOT NULL,          -- the IBAN or name as the bank wrote it
        ledger_key TEXT NOT NULL,          -- the ledger counterparty, normalised
        ledger_name TEXT NOT NULL,         -- the ledger counterparty as the books write it
        times INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        UNIQUE (tenant_id, account_id, bank_key, ledger_key)
    );
    CREATE TABLE recon_alias_sources (
        match_id TEXT NOT NULL,
        alias_id INTEGER NOT NULL,
        PRIMARY KEY (match_id, alias_id)
    );
    CREATE INDEX recon_alias_sources_alias ON recon_alias_sources(alias_id);
    """
)

#: A run's figures that reports read (``reconciliation.runs``), by column, and the key
#: of the run's ``counts`` JSON each was taken from (a frozen copy, as ``_INSTANTS``).
RUN_FIGURES = {
    "lines_considered": "bank_lines_open_before",
    "entries_considered": "ledger_entries_open_before",
    "auto_matches": "matches",
    "lines_matched": "bank_lines_matched",
    "entries_matched": "ledger_entries_matched",
    "suggestions": "suggestions",
    "lines_open": "bank_lines_open",
    "entries_open": "ledger_entries_open",
}

# 6 (issue 15): a run's figures get columns of their own, copied from its counts. Report
# sources are one SELECT for both backends, and SQLite and PostgreSQL share no way to read
# a field of JSON text (json_extract against ->> on a json value); plain columns are also
# cheaper to read. ``counts`` stays: the API answers it whole (by_rule, skipped_conflicts).
MIGRATIONS.append(
    "".join(f"ALTER TABLE recon_runs ADD COLUMN {col} INTEGER;\n" for col in RUN_FIGURES)
    + "UPDATE recon_runs SET "
    + ", ".join(f"{col} = json_extract(counts, '$.{key}')" for col, key in RUN_FIGURES.items())
    + ";\n"
)


# --- PostgreSQL ---------------------------------------------------------------------------------

#: SQLite's column types and what PostgreSQL calls them (see docs/postgresql.md): ids keep
#: explicit values on a copy (BY DEFAULT), integers are 64 bits as SQLite's, REAL is float8.
_PG_TYPES = (
    ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (" INTEGER ", " BIGINT "),
    (" INTEGER,", " BIGINT,"),
    (" INTEGER;", " BIGINT;"),
    (" REAL ", " DOUBLE PRECISION "),
)


def _pg(sqlite_script: str) -> str:
    """A script of SQLite's list in PostgreSQL's types (it is otherwise portable:
    CREATE TABLE and INDEX, ALTER TABLE ADD COLUMN, UPDATE)."""
    for sqlite_type, pg_type in _PG_TYPES:
        sqlite_script = sqlite_script.replace(sqlite_type, pg_type)
    return sqlite_script


POSTGRESQL_MIGRATIONS = [
    # 1: the tables as SQLite's migration 1 made them (instants ISO text).
    _pg(MIGRATIONS[0]),
    # 2: portable as it is (a no-op on a new database).
    MIGRATIONS[1],
    # 3: instants become unix seconds. PostgreSQL changes a column's type in place
    # (indexes are rebuilt with it), so nothing is rebuilt by hand; the ISO text of
    # migration 2 is read as a UTC timestamp.
    "".join(
        f"ALTER TABLE {table} "
        + ", ".join(
            f"ALTER COLUMN {col} TYPE DOUBLE PRECISION USING extract(epoch FROM {col}::timestamptz)" for col in cols
        )
        + ";\n"
        for table, cols in _INSTANTS.items()
    ),
    # 4: the indexes of paged lists: portable as it is.
    MIGRATIONS[3],
    # 5: currencies and aliases.
    _pg(MIGRATIONS[4]),
    # 6: a run's figures in columns.
    "".join(f"ALTER TABLE recon_runs ADD COLUMN {col} BIGINT;\n" for col in RUN_FIGURES)
    + "UPDATE recon_runs SET "
    + ", ".join(f"{col} = (counts::json ->> '{key}')::bigint" for col, key in RUN_FIGURES.items())
    + ";\n",
]
