"""The webhook tables, as numbered migrations (never edit a released one: append).

Three tables: endpoints (the subscriptions), deliveries (one per event and
endpoint; a pending row with a ``due_at`` *is* the scheduled retry, so
retries survive restarts) and attempts (the history).
"""

from __future__ import annotations

MIGRATIONS = [
    # 1: endpoints, deliveries, attempts.
    """
    CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        url TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        event_types TEXT NOT NULL DEFAULT '[]',
        headers TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        rate_limit REAL,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        disabled_at REAL,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_until REAL,
        failing_since REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, created_at);
    CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at REAL,
        claimed_at REAL,
        created_at REAL NOT NULL,
        last_attempt_at REAL,
        last_status_code INTEGER,
        last_error TEXT,
        finished_at REAL,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_due_all ON webhook_deliveries(due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_inflight ON webhook_deliveries(status) WHERE status = 'inflight';
    CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, seq);
    CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at);
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        delivery_seq INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        attempted_at REAL NOT NULL,
        status_code INTEGER,
        latency_ms REAL,
        outcome TEXT NOT NULL,
        error TEXT,
        response_body TEXT
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_seq);
    CREATE INDEX webhook_attempts_time ON webhook_attempts(attempted_at);
    """,
    # 2: fewer round trips on the hot paths. A claim marks its rows with a
    # claim id (one UPDATE, then one SELECT of that claim); an attempt row
    # carries the delivery's next state and a trigger applies it, so recording
    # a batch of results is one INSERT statement (atomic on its own).
    """
    ALTER TABLE webhook_deliveries ADD COLUMN claim_id INTEGER;
    ALTER TABLE webhook_attempts ADD COLUMN next_status TEXT;
    ALTER TABLE webhook_attempts ADD COLUMN next_due_at REAL;
    CREATE TRIGGER webhook_attempt_applied AFTER INSERT ON webhook_attempts
    WHEN NEW.next_status IS NOT NULL
    BEGIN
        UPDATE webhook_deliveries SET status=NEW.next_status, due_at=NEW.next_due_at, claimed_at=NULL,
            claim_id=NULL, attempts=attempts+1, last_attempt_at=NEW.attempted_at,
            last_status_code=NEW.status_code, last_error=NEW.error,
            finished_at=CASE WHEN NEW.next_status IN ('succeeded', 'failed') THEN NEW.attempted_at END
        WHERE seq=NEW.delivery_seq;
        -- The failure window of an endpoint starts at its first failure after its last success.
        UPDATE webhook_endpoints SET failing_since=NULL
        WHERE id=NEW.endpoint_id AND NEW.outcome='success' AND failing_since IS NOT NULL;
        UPDATE webhook_endpoints SET failing_since=NEW.attempted_at
        WHERE id=NEW.endpoint_id AND NEW.outcome!='success' AND failing_since IS NULL;
    END;
    """,
]


# --- 3: costs that stay flat as the tables grow (issue 16) ------------------------------------

#: Upper bounds (ms) of the latency histogram's buckets, 1.41x apart from 1 ms to
#: 60 s (60000 ** (1/32), rounded to 3 digits). Bucket 0 is below 1 ms, bucket i
#: is [BOUNDS[i-1], BOUNDS[i]), bucket 33 is 60 s and over; -1 is an attempt
#: with no latency. Frozen: migration 3 writes them into its trigger, and the
#: stats read the stored buckets with them (a new set needs a new migration).
LATENCY_BOUNDS_MS = (
    1.0, 1.41, 1.99, 2.81, 3.96, 5.58, 7.87, 11.1, 15.7, 22.1, 31.1, 43.9, 61.9, 87.3, 123.0, 174.0, 245.0,
    345.0, 487.0, 687.0, 969.0, 1370.0, 1930.0, 2720.0, 3830.0, 5410.0, 7630.0, 10800.0, 15200.0, 21400.0,
    30200.0, 42500.0, 60000.0,
)  # fmt: skip


def latency_bucket_sql(column: str) -> str:
    """SQL for the histogram bucket of ``column`` (milliseconds): a binary search
    of CASEs, six comparisons deep, because the trigger runs it on every attempt
    (and SQLite's math functions are not compiled into every build)."""

    def search(lo: int, hi: int) -> str:
        # Buckets lo..hi; bucket i holds values below LATENCY_BOUNDS_MS[i] (i < 33).
        if lo == hi:
            return str(lo)
        mid = (lo + hi) // 2
        return f"CASE WHEN {column}<{LATENCY_BOUNDS_MS[mid]!r} THEN {search(lo, mid)} ELSE {search(mid + 1, hi)} END"

    return f"CASE WHEN {column} IS NULL THEN -1 ELSE {search(0, len(LATENCY_BOUNDS_MS))} END"


_COUNT_COLUMNS = ("pending", "inflight", "succeeded", "failed")


def _count_change(sign_new: str, sign_old: str, as_int: str = "") -> str:
    """SET clause moving an endpoint's counters by NEW.status (+1) and OLD.status (-1).

    ``as_int`` turns a comparison into a number: SQLite's are 0/1 already,
    PostgreSQL's are booleans (``"::int"``)."""
    terms = []
    for status in _COUNT_COLUMNS:
        change = (f" + (NEW.status='{status}'){as_int}" if sign_new else "") + (
            f" - (OLD.status='{status}'){as_int}" if sign_old else ""
        )
        terms.append(f"{status}={status}{change}")
    return ", ".join(terms)


MIGRATIONS.append(
    # 3: stats kept as they change, and lists and retention that walk an index
    # (issue 16). Each index here costs writes on the delivery path, so there are few:
    #
    # - webhook_delivery_counts: an endpoint's deliveries by status, kept exact by the
    #   triggers on webhook_deliveries (insert, change of status, delete); a row per
    #   endpoint, made and dropped with the endpoint.
    # - webhook_attempt_minutes: attempts per endpoint, minute, outcome and latency
    #   bucket (LATENCY_BOUNDS_MS), counted by a trigger on every attempt. A new row
    #   (and so an entry of its minute index, which retention walks) is written once
    #   per endpoint, minute, outcome and bucket; the other attempts add 1 to it.
    # - Delivery lists are in (created_at, seq) order, newest first, and walk
    #   (endpoint_id, created_at) (it replaces (endpoint_id, seq)): since/until are a
    #   range of that index. Not seq bounds: created_at is the event's time, which a
    #   replay gives to deliveries made long after (an older created_at at a higher seq).
    # - Status filters: pending, inflight and failed are a small share of an endpoint's
    #   deliveries (selective), each walks a partial index of its own in list order
    #   (inflight's replaces the (status) one of migration 1, same writes; failed is
    #   written only when a delivery gives up; pending when a delivery waits, i.e. a
    #   retry or no room in flight). succeeded is most of the rows: checked on the
    #   walk of the endpoint's index (a page reads about limit / share succeeded rows).
    # - Event type: (endpoint_id, event_type, created_at), one more entry per delivery.
    #   An exact type walks it; 'invoice.*' finds the endpoint's types under the prefix
    #   (one seek each) and merges their walks. Walking the endpoint's index and checking
    #   the type instead costs limit / share rows: a rare type, or one that stopped
    #   coming, would read the endpoint's whole history for one page.
    f"""
    CREATE TABLE webhook_delivery_counts (
        endpoint_id TEXT PRIMARY KEY,
        pending INTEGER NOT NULL DEFAULT 0,
        inflight INTEGER NOT NULL DEFAULT 0,
        succeeded INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    INSERT INTO webhook_delivery_counts(endpoint_id, pending, inflight, succeeded, failed)
        SELECT e.id, COALESCE(SUM(d.status='pending'), 0), COALESCE(SUM(d.status='inflight'), 0),
            COALESCE(SUM(d.status='succeeded'), 0), COALESCE(SUM(d.status='failed'), 0)
        FROM webhook_endpoints e LEFT JOIN webhook_deliveries d ON d.endpoint_id=e.id GROUP BY e.id;
    CREATE TABLE webhook_attempt_minutes (
        endpoint_id TEXT NOT NULL,
        minute INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (endpoint_id, minute, outcome, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX webhook_attempt_minutes_minute ON webhook_attempt_minutes(minute);
    INSERT INTO webhook_attempt_minutes(endpoint_id, minute, outcome, bucket, n)
        SELECT endpoint_id, CAST(attempted_at / 60 AS INTEGER), outcome, {latency_bucket_sql("latency_ms")}, COUNT(*)
        FROM webhook_attempts WHERE endpoint_id IN (SELECT id FROM webhook_endpoints) GROUP BY 1, 2, 3, 4;
    CREATE TRIGGER webhook_endpoint_counters AFTER INSERT ON webhook_endpoints BEGIN
        INSERT OR IGNORE INTO webhook_delivery_counts(endpoint_id) VALUES (NEW.id);
    END;
    CREATE TRIGGER webhook_endpoint_counters_dropped AFTER DELETE ON webhook_endpoints BEGIN
        DELETE FROM webhook_delivery_counts WHERE endpoint_id=OLD.id;
        DELETE FROM webhook_attempt_minutes WHERE endpoint_id=OLD.id;
    END;
    CREATE TRIGGER webhook_delivery_counted AFTER INSERT ON webhook_deliveries BEGIN
        UPDATE webhook_delivery_counts SET {_count_change("+", "")} WHERE endpoint_id=NEW.endpoint_id;
    END;
    CREATE TRIGGER webhook_delivery_recounted AFTER UPDATE OF status ON webhook_deliveries
    WHEN OLD.status IS NOT NEW.status BEGIN
        UPDATE webhook_delivery_counts SET {_count_change("+", "-")} WHERE endpoint_id=NEW.endpoint_id;
    END;
    CREATE TRIGGER webhook_delivery_uncounted AFTER DELETE ON webhook_deliveries BEGIN
        UPDATE webhook_delivery_counts SET {_count_change("", "-")} WHERE endpoint_id=OLD.endpoint_id;
    END;
    CREATE TRIGGER webhook_attempt_counted AFTER INSERT ON webhook_attempts BEGIN
        INSERT INTO webhook_attempt_minutes(endpoint_id, minute, outcome, bucket, n)
        VALUES (NEW.endpoint_id, CAST(NEW.attempted_at / 60 AS INTEGER), NEW.outcome,
            {latency_bucket_sql("NEW.latency_ms")}, 1)
        ON CONFLICT DO UPDATE SET n=n+1;
    END;
    DROP INDEX webhook_deliveries_endpoint;
    DROP INDEX webhook_deliveries_inflight;
    CREATE INDEX webhook_deliveries_list ON webhook_deliveries(endpoint_id, created_at);
    CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(endpoint_id, created_at) WHERE status='pending';
    CREATE INDEX webhook_deliveries_inflight ON webhook_deliveries(endpoint_id, created_at) WHERE status='inflight';
    CREATE INDEX webhook_deliveries_failed ON webhook_deliveries(endpoint_id, created_at) WHERE status='failed';
    CREATE INDEX webhook_deliveries_type ON webhook_deliveries(endpoint_id, event_type, created_at);
    CREATE INDEX webhook_endpoints_list ON webhook_endpoints(tenant_id, id);
    """
)


MIGRATIONS.append(
    # 4: deleting an endpoint answers at once; its history goes afterwards, in slices
    # (issue: one tenant's DELETE of an endpoint with 500k deliveries held the writer
    # for seconds, and every tenant's intake waited).
    #
    # - Deleting an endpoint row drops its delivery counters (one row) and enqueues it
    #   in webhook_purges, in the same statement: from then on nothing of it is claimed
    #   or shown (every read of its deliveries goes through its endpoint row), and the
    #   queue survives a crash. The purge task (``purge.py``) deletes its deliveries
    #   along (endpoint_id, created_at) a slice at a time, then its attempt minutes
    #   along their primary key, then its queue row.
    # - A delivery of a queued endpoint takes its attempts with it (the attempts have
    #   no endpoint index, and one would cost a write on every attempt): one seek of
    #   (delivery_seq) per delivery, counted in the queue row for the log line.
    # - An attempt of an endpoint that no longer exists (a request in flight when it
    #   was deleted, recorded afterwards) is not stored, nor counted in a minute.
    """
    CREATE TABLE webhook_purges (
        endpoint_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    DROP TRIGGER webhook_endpoint_counters_dropped;
    CREATE TRIGGER webhook_endpoint_dropped AFTER DELETE ON webhook_endpoints BEGIN
        DELETE FROM webhook_delivery_counts WHERE endpoint_id=OLD.id;
        INSERT OR IGNORE INTO webhook_purges(endpoint_id, tenant_id) VALUES (OLD.id, OLD.tenant_id);
    END;
    CREATE TRIGGER webhook_delivery_purged AFTER DELETE ON webhook_deliveries
    WHEN EXISTS (SELECT 1 FROM webhook_purges WHERE endpoint_id=OLD.endpoint_id) BEGIN
        DELETE FROM webhook_attempts WHERE delivery_seq=OLD.seq;
        UPDATE webhook_purges SET deliveries=deliveries+1, attempts=attempts+changes()
        WHERE endpoint_id=OLD.endpoint_id;
    END;
    CREATE TRIGGER webhook_attempt_of_deleted_endpoint BEFORE INSERT ON webhook_attempts
    WHEN NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id=NEW.endpoint_id) BEGIN
        SELECT RAISE(IGNORE);
    END;
    """
)


# 5 (issue 14): what an endpoint may ask of its deliveries.
# - ordering: 'unordered' (the default: as fast as the slots allow) or 'fifo' (its
#   deliveries leave in event order, one in flight at a time); blocked_since is when
#   a fifo endpoint's head delivery started failing (NULL while it flows).
# - transformation: NULL, or the JSON of a sandboxed template that reshapes the
#   body (and may add headers) before it is signed and sent.
MIGRATIONS.append(
    """
    ALTER TABLE webhook_endpoints ADD COLUMN ordering TEXT NOT NULL DEFAULT 'unordered';
    ALTER TABLE webhook_endpoints ADD COLUMN blocked_since REAL;
    ALTER TABLE webhook_endpoints ADD COLUMN transformation TEXT;
    """
)


# 6: the portal a tenant hands to its own customers (``portal.py``).
# - owner: the tenant's customer an endpoint belongs to (NULL: the tenant's own);
#   a portal link of scope 'own' shows only that customer's endpoints. The index
#   serves ``GET /v1/webhooks?owner=`` in the list's order (id, which rises with
#   creation time), so a page is one range walk.
# - webhook_portal_links: one-time links to the portal. Only the token's hash is
#   kept; redeemed_at is set once (the link opens one session); revoked_at ends it
#   and every session it opened.
MIGRATIONS.append(
    """
    ALTER TABLE webhook_endpoints ADD COLUMN owner TEXT;
    CREATE INDEX webhook_endpoints_owner ON webhook_endpoints(tenant_id, owner, id);
    CREATE TABLE webhook_portal_links (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        customer TEXT NOT NULL,
        scope TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        redeemed_at REAL,
        revoked_at REAL,
        created_by TEXT NOT NULL
    );
    CREATE INDEX webhook_portal_links_tenant ON webhook_portal_links(tenant_id, id);
    """
)


# 7: several nodes on one database (issue 15): a claim records the node that
# made it (``Database.node``), so that a node takes over the deliveries in
# flight on a node that is gone, and leaves those of a live node alone. Set by
# every claim and kept after the attempt (the node that sent it last); only
# read together with status='inflight' (the partial index of migration 3).
CLAIMED_BY = """
    ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT;
    """
MIGRATIONS.append(CLAIMED_BY)


# 8: the counters are read through views, ``webhook_delivery_counts_now`` and
# ``webhook_attempt_minutes_now``, so that PostgreSQL can keep them its own way
# (its migration 8: changes appended, folded every second). On SQLite, where
# one writer keeps the counters exact, they are the tables themselves (simple
# views, which SQLite flattens into the query: the same plans).
MIGRATIONS.append(
    """
    CREATE VIEW webhook_delivery_counts_now AS
        SELECT endpoint_id, pending, inflight, succeeded, failed FROM webhook_delivery_counts;
    CREATE VIEW webhook_attempt_minutes_now AS
        SELECT endpoint_id, minute, outcome, bucket, n FROM webhook_attempt_minutes;
    """
)


# --- PostgreSQL (issue 15) ---------------------------------------------------------------------
#
# The same six migrations for PostgreSQL: version N builds the tables, columns and
# indexes of SQLite's version N, under the same names (``tierd db copy`` moves rows
# table by table). Types hold the values SQLite stores: times DOUBLE PRECISION
# seconds, ints and booleans BIGINT (0/1), JSON as TEXT; seq and the attempts' id
# are identities BY DEFAULT (a copy inserts them as they were). Differences:
#
# - SQLite's triggers are PL/pgSQL functions, one per trigger, of the same name.
#   A trigger's WHEN may not hold a subquery in PostgreSQL: those checks are in
#   the function body (webhook_delivery_purged, webhook_attempt_of_deleted_endpoint,
#   which returns NULL to skip the row as SQLite's RAISE(IGNORE) does).
# - Comparisons are booleans: the counters add ``(status='x')::int``.
# - A minute is FLOOR(t / 60) (SQLite's CAST truncates; times are positive).
# - event_type is COLLATE "C": a ``prefix.*`` filter is a range of the text
#   (``store._next_prefix``), which holds in byte order, SQLite's, but not in a
#   linguistic collation (en_US ignores punctuation at first).
# - No WITHOUT ROWID: PostgreSQL's tables are heaps with a primary-key index.


def _pg_trigger(name: str, event: str, body: str, when: str = "", declare: str = "", referencing: str = "") -> str:
    """A trigger ``name`` and the PL/pgSQL function (same name) that runs ``body``:
    for each row, or with ``referencing`` (``NEW TABLE AS x``...) for each
    statement, which sees the statement's rows as those transition tables.

    AFTER triggers return NULL (ignored); a BEFORE trigger's body returns itself."""
    returns = "" if event.startswith("BEFORE") else "RETURN NULL;"
    each = f"REFERENCING {referencing} FOR EACH STATEMENT" if referencing else "FOR EACH ROW"
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$
    {f"DECLARE {declare}" if declare else ""}
    BEGIN
        {body}
        {returns}
    END
    $fn$;
    CREATE TRIGGER {name} {event} {each} {f"WHEN ({when})" if when else ""} EXECUTE FUNCTION {name}();
    """


POSTGRESQL_MIGRATIONS = [
    # 1: endpoints, deliveries, attempts.
    """
    CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        url TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        event_types TEXT NOT NULL DEFAULT '[]',
        headers TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        rate_limit DOUBLE PRECISION,
        enabled BIGINT NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        disabled_at DOUBLE PRECISION,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_until DOUBLE PRECISION,
        failing_since DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, created_at);
    CREATE TABLE webhook_deliveries (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT COLLATE "C" NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts BIGINT NOT NULL DEFAULT 0,
        due_at DOUBLE PRECISION,
        claimed_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        last_attempt_at DOUBLE PRECISION,
        last_status_code BIGINT,
        last_error TEXT,
        finished_at DOUBLE PRECISION,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_due_all ON webhook_deliveries(due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_inflight ON webhook_deliveries(status) WHERE status = 'inflight';
    CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, seq);
    CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at);
    CREATE TABLE webhook_attempts (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        delivery_seq BIGINT NOT NULL,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        attempted_at DOUBLE PRECISION NOT NULL,
        status_code BIGINT,
        latency_ms DOUBLE PRECISION,
        outcome TEXT NOT NULL,
        error TEXT,
        response_body TEXT
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_seq);
    CREATE INDEX webhook_attempts_time ON webhook_attempts(attempted_at);
    """,
    # 2: claim ids; an attempt row carries the delivery's next state, applied by a trigger.
    """
    ALTER TABLE webhook_deliveries ADD COLUMN claim_id BIGINT;
    ALTER TABLE webhook_attempts ADD COLUMN next_status TEXT;
    ALTER TABLE webhook_attempts ADD COLUMN next_due_at DOUBLE PRECISION;
    """
    + _pg_trigger(
        "webhook_attempt_applied",
        "AFTER INSERT ON webhook_attempts",
        when="NEW.next_status IS NOT NULL",
        body="""
        UPDATE webhook_deliveries SET status=NEW.next_status, due_at=NEW.next_due_at, claimed_at=NULL,
            claim_id=NULL, attempts=attempts+1, last_attempt_at=NEW.attempted_at,
            last_status_code=NEW.status_code, last_error=NEW.error,
            finished_at=CASE WHEN NEW.next_status IN ('succeeded', 'failed') THEN NEW.attempted_at END
        WHERE seq=NEW.delivery_seq;
        -- The failure window of an endpoint starts at its first failure after its last success.
        UPDATE webhook_endpoints SET failing_since=NULL
        WHERE id=NEW.endpoint_id AND NEW.outcome='success' AND failing_since IS NOT NULL;
        UPDATE webhook_endpoints SET failing_since=NEW.attempted_at
        WHERE id=NEW.endpoint_id AND NEW.outcome!='success' AND failing_since IS NULL;
        """,
    ),
    # 3: counters kept by triggers, and the list indexes (see SQLite's migration 3).
    f"""
    CREATE TABLE webhook_delivery_counts (
        endpoint_id TEXT PRIMARY KEY,
        pending BIGINT NOT NULL DEFAULT 0,
        inflight BIGINT NOT NULL DEFAULT 0,
        succeeded BIGINT NOT NULL DEFAULT 0,
        failed BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO webhook_delivery_counts(endpoint_id, pending, inflight, succeeded, failed)
        SELECT e.id, COUNT(*) FILTER (WHERE d.status='pending'), COUNT(*) FILTER (WHERE d.status='inflight'),
            COUNT(*) FILTER (WHERE d.status='succeeded'), COUNT(*) FILTER (WHERE d.status='failed')
        FROM webhook_endpoints e LEFT JOIN webhook_deliveries d ON d.endpoint_id=e.id GROUP BY e.id;
    CREATE TABLE webhook_attempt_minutes (
        endpoint_id TEXT NOT NULL,
        minute BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        bucket BIGINT NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, minute, outcome, bucket)
    );
    CREATE INDEX webhook_attempt_minutes_minute ON webhook_attempt_minutes(minute);
    INSERT INTO webhook_attempt_minutes(endpoint_id, minute, outcome, bucket, n)
        SELECT endpoint_id, FLOOR(attempted_at / 60)::bigint, outcome, {latency_bucket_sql("latency_ms")}, COUNT(*)
        FROM webhook_attempts WHERE endpoint_id IN (SELECT id FROM webhook_endpoints) GROUP BY 1, 2, 3, 4;
    """
    + _pg_trigger(
        "webhook_endpoint_counters",
        "AFTER INSERT ON webhook_endpoints",
        "INSERT INTO webhook_delivery_counts(endpoint_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;",
    )
    + _pg_trigger(
        "webhook_endpoint_counters_dropped",
        "AFTER DELETE ON webhook_endpoints",
        """
        DELETE FROM webhook_delivery_counts WHERE endpoint_id=OLD.id;
        DELETE FROM webhook_attempt_minutes WHERE endpoint_id=OLD.id;
        """,
    )
    + _pg_trigger(
        "webhook_delivery_counted",
        "AFTER INSERT ON webhook_deliveries",
        f"UPDATE webhook_delivery_counts SET {_count_change('+', '', '::int')} WHERE endpoint_id=NEW.endpoint_id;",
    )
    + _pg_trigger(
        "webhook_delivery_recounted",
        "AFTER UPDATE OF status ON webhook_deliveries",
        when="OLD.status IS DISTINCT FROM NEW.status",
        body=f"UPDATE webhook_delivery_counts SET {_count_change('+', '-', '::int')}"
        " WHERE endpoint_id=NEW.endpoint_id;",
    )
    + _pg_trigger(
        "webhook_delivery_uncounted",
        "AFTER DELETE ON webhook_deliveries",
        f"UPDATE webhook_delivery_counts SET {_count_change('', '-', '::int')} WHERE endpoint_id=OLD.endpoint_id;",
    )
    + _pg_trigger(
        "webhook_attempt_counted",
        "AFTER INSERT ON webhook_attempts",
        f"""
        INSERT INTO webhook_attempt_minutes AS m (endpoint_id, minute, outcome, bucket, n)
        VALUES (NEW.endpoint_id, FLOOR(NEW.attempted_at / 60)::bigint, NEW.outcome,
            {latency_bucket_sql("NEW.latency_ms")}, 1)
        ON CONFLICT (endpoint_id, minute, outcome, bucket) DO UPDATE SET n=m.n+1;
        """,
    )
    + """
    DROP INDEX webhook_deliveries_endpoint;
    DROP INDEX webhook_deliveries_inflight;
    CREATE INDEX webhook_deliveries_list ON webhook_deliveries(endpoint_id, created_at);
    CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(endpoint_id, created_at) WHERE status='pending';
    CREATE INDEX webhook_deliveries_inflight ON webhook_deliveries(endpoint_id, created_at) WHERE status='inflight';
    CREATE INDEX webhook_deliveries_failed ON webhook_deliveries(endpoint_id, created_at) WHERE status='failed';
    CREATE INDEX webhook_deliveries_type ON webhook_deliveries(endpoint_id, event_type, created_at);
    CREATE INDEX webhook_endpoints_list ON webhook_endpoints(tenant_id, id);
    """,
    # 4: deleting an endpoint queues its history for the purge task (see SQLite's migration 4).
    """
    CREATE TABLE webhook_purges (
        endpoint_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        deliveries BIGINT NOT NULL DEFAULT 0,
        attempts BIGINT NOT NULL DEFAULT 0
    );
    DROP TRIGGER webhook_endpoint_counters_dropped ON webhook_endpoints;
    DROP FUNCTION webhook_endpoint_counters_dropped();
    """
    + _pg_trigger(
        "webhook_endpoint_dropped",
        "AFTER DELETE ON webhook_endpoints",
        """
        DELETE FROM webhook_delivery_counts WHERE endpoint_id=OLD.id;
        INSERT INTO webhook_purges(endpoint_id, tenant_id) VALUES (OLD.id, OLD.tenant_id) ON CONFLICT DO NOTHING;
        """,
    )
    + _pg_trigger(
        "webhook_delivery_purged",
        "AFTER DELETE ON webhook_deliveries",
        declare="removed BIGINT;",
        body="""
        IF EXISTS (SELECT 1 FROM webhook_purges WHERE endpoint_id=OLD.endpoint_id) THEN
            DELETE FROM webhook_attempts WHERE delivery_seq=OLD.seq;
            GET DIAGNOSTICS removed = ROW_COUNT;
            UPDATE webhook_purges SET deliveries=deliveries+1, attempts=attempts+removed
            WHERE endpoint_id=OLD.endpoint_id;
        END IF;
        """,
    )
    + _pg_trigger(
        "webhook_attempt_of_deleted_endpoint",
        "BEFORE INSERT ON webhook_attempts",
        """
        IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id=NEW.endpoint_id) THEN
            RETURN NULL;
        END IF;
        RETURN NEW;
        """,
    ),
    # 5: ordering and transformation.
    """
    ALTER TABLE webhook_endpoints ADD COLUMN ordering TEXT NOT NULL DEFAULT 'unordered';
    ALTER TABLE webhook_endpoints ADD COLUMN blocked_since DOUBLE PRECISION;
    ALTER TABLE webhook_endpoints ADD COLUMN transformation TEXT;
    """,
    # 6: the portal: endpoint owners and portal links.
    """
    ALTER TABLE webhook_endpoints ADD COLUMN owner TEXT;
    CREATE INDEX webhook_endpoints_owner ON webhook_endpoints(tenant_id, owner, id);
    CREATE TABLE webhook_portal_links (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        customer TEXT NOT NULL,
        scope TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        redeemed_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        created_by TEXT NOT NULL
    );
    CREATE INDEX webhook_portal_links_tenant ON webhook_portal_links(tenant_id, id);
    """,
    # 7: the node of a claim (see SQLite's migration 7).
    CLAIMED_BY,
]


def _status_counts(sign: str = "") -> str:
    """The rows of each status (``sign`` ``-``: taken away), for a SELECT grouped by endpoint."""
    return ", ".join(f"{sign}COUNT(*) FILTER (WHERE status='{status}')" for status in _COUNT_COLUMNS)


def _status_moves() -> str:
    """The rows that came into each status less those that left it (``now`` and
    ``was``, an UPDATE's rows after and before), for a SELECT grouped by endpoint."""
    return ", ".join(f"SUM((now.status='{s}')::int - (was.status='{s}')::int)" for s in _COUNT_COLUMNS)


_CHANGE_COLUMNS = "endpoint_id, " + ", ".join(_COUNT_COLUMNS)

POSTGRESQL_MIGRATIONS.append(
    # 8: counters without a hot row (issue 15). The triggers of migration 3 updated
    # one row per endpoint on every delivery made, claimed, recorded or deleted, and
    # one row per endpoint and minute on every attempt: several nodes' (and one
    # node's) intake, claims and recorder waited on each other's row locks, and
    # deadlocked a few times a run. Now each statement appends its changes, one row
    # per endpoint (and minute), to a table no one updates; ``webhook_counts_fold``
    # (every second, on one node: the ``webhooks.fold`` job) moves them into the counters of
    # migration 3 in one transaction; the ``_now`` views add what is not folded yet,
    # so a read is exact at any time. The triggers are per statement: a batch of
    # 500 deliveries appends one row per endpoint, not 500.
    # Also the write path in fewer round trips: a batch of attempts applied by one
    # statement trigger, and the consumer's insert and the claims one call each
    # (webhook_make_deliveries, webhook_claim_due).
    """
    CREATE TABLE webhook_delivery_count_changes (
        endpoint_id TEXT NOT NULL,
        pending BIGINT NOT NULL,
        inflight BIGINT NOT NULL,
        succeeded BIGINT NOT NULL,
        failed BIGINT NOT NULL
    );
    CREATE INDEX webhook_delivery_count_changes_endpoint ON webhook_delivery_count_changes(endpoint_id);
    CREATE TABLE webhook_attempt_minute_changes (
        endpoint_id TEXT NOT NULL,
        minute BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        bucket BIGINT NOT NULL,
        n BIGINT NOT NULL
    );
    CREATE INDEX webhook_attempt_minute_changes_endpoint ON webhook_attempt_minute_changes(endpoint_id, minute);
    DROP TRIGGER webhook_delivery_counted ON webhook_deliveries;
    DROP FUNCTION webhook_delivery_counted();
    DROP TRIGGER webhook_delivery_recounted ON webhook_deliveries;
    DROP FUNCTION webhook_delivery_recounted();
    DROP TRIGGER webhook_delivery_uncounted ON webhook_deliveries;
    DROP FUNCTION webhook_delivery_uncounted();
    DROP TRIGGER webhook_attempt_counted ON webhook_attempts;
    DROP FUNCTION webhook_attempt_counted();
    """
    + _pg_trigger(
        "webhook_deliveries_counted",
        "AFTER INSERT ON webhook_deliveries",
        referencing="NEW TABLE AS made",
        body=f"""INSERT INTO webhook_delivery_count_changes({_CHANGE_COLUMNS})
        SELECT endpoint_id, {_status_counts()} FROM made GROUP BY endpoint_id;""",
    )
    + _pg_trigger(
        "webhook_deliveries_recounted",
        "AFTER UPDATE ON webhook_deliveries",
        referencing="OLD TABLE AS was NEW TABLE AS now",
        # Transition tables cannot go with UPDATE OF status: the join keeps the
        # rows whose status changed (a statement that changes none appends none).
        body=f"""INSERT INTO webhook_delivery_count_changes({_CHANGE_COLUMNS})
        SELECT now.endpoint_id, {_status_moves()}
        FROM now JOIN was ON was.seq=now.seq WHERE was.status IS DISTINCT FROM now.status
        GROUP BY now.endpoint_id;""",
    )
    + _pg_trigger(
        "webhook_deliveries_uncounted",
        "AFTER DELETE ON webhook_deliveries",
        referencing="OLD TABLE AS gone",
        body=f"""INSERT INTO webhook_delivery_count_changes({_CHANGE_COLUMNS})
        SELECT endpoint_id, {_status_counts("-")} FROM gone GROUP BY endpoint_id;""",
    )
    # An attempt row's next state (migration 2), applied per statement too: one
    # UPDATE for a batch of attempts instead of one (and its counter changes)
    # per attempt. A delivery has one attempt in flight, so one row of a batch;
    # should two come, the last is applied, both counted. An endpoint's failure
    # window: cleared by a success, and then started by the first failure after
    # its last success in the batch (none: a window already open stays).
    + """
    DROP TRIGGER webhook_attempt_applied ON webhook_attempts;
    DROP FUNCTION webhook_attempt_applied();
    """
    + _pg_trigger(
        "webhook_attempts_applied",
        "AFTER INSERT ON webhook_attempts",
        referencing="NEW TABLE AS made",
        body="""
        UPDATE webhook_deliveries d SET status=a.next_status, due_at=a.next_due_at, claimed_at=NULL,
            claim_id=NULL, attempts=d.attempts+a.n, last_attempt_at=a.attempted_at,
            last_status_code=a.status_code, last_error=a.error,
            finished_at=CASE WHEN a.next_status IN ('succeeded', 'failed') THEN a.attempted_at END
        FROM (
            SELECT DISTINCT ON (delivery_seq) *, COUNT(*) OVER (PARTITION BY delivery_seq) AS n
            FROM made WHERE next_status IS NOT NULL ORDER BY delivery_seq, id DESC
        ) a
        WHERE d.seq=a.delivery_seq;
        UPDATE webhook_endpoints e
        SET failing_since=CASE WHEN o.last_ok IS NULL THEN COALESCE(e.failing_since, w.failed) ELSE w.failed END
        FROM (
            SELECT endpoint_id, MAX(id) FILTER (WHERE outcome='success') AS last_ok
            FROM made WHERE next_status IS NOT NULL GROUP BY endpoint_id
        ) o
        CROSS JOIN LATERAL (
            SELECT MIN(f.attempted_at) AS failed FROM made f
            WHERE f.endpoint_id=o.endpoint_id AND f.next_status IS NOT NULL AND f.outcome<>'success'
                AND f.id>COALESCE(o.last_ok, 0)
        ) w
        WHERE e.id=o.endpoint_id AND e.failing_since IS DISTINCT FROM
            CASE WHEN o.last_ok IS NULL THEN COALESCE(e.failing_since, w.failed) ELSE w.failed END;
        """,
    )
    + _pg_trigger(
        "webhook_attempts_counted",
        "AFTER INSERT ON webhook_attempts",
        referencing="NEW TABLE AS made",
        body=f"""INSERT INTO webhook_attempt_minute_changes(endpoint_id, minute, outcome, bucket, n)
        SELECT endpoint_id, FLOOR(attempted_at / 60)::bigint, outcome, {latency_bucket_sql("latency_ms")}, COUNT(*)
        FROM made GROUP BY 1, 2, 3, 4;""",
    )
    + f"""
    CREATE VIEW webhook_delivery_counts_now AS
        SELECT c.endpoint_id, {", ".join(f"c.{s} + x.{s} AS {s}" for s in _COUNT_COLUMNS)}
        FROM webhook_delivery_counts c CROSS JOIN LATERAL (
            SELECT {", ".join(f"COALESCE(SUM(d.{s}), 0)::bigint AS {s}" for s in _COUNT_COLUMNS)}
            FROM webhook_delivery_count_changes d WHERE d.endpoint_id=c.endpoint_id
        ) x;
    CREATE VIEW webhook_attempt_minutes_now AS
        SELECT endpoint_id, minute, outcome, bucket, n FROM webhook_attempt_minutes
        UNION ALL SELECT endpoint_id, minute, outcome, bucket, n FROM webhook_attempt_minute_changes;
    -- The consumer's insert of deliveries, and a claim of due ones, each in one
    -- call: both hold the claims' lock (tierd.webhooks.claims) till they commit,
    -- and a round trip made while holding it is one that every claim of the
    -- cluster waits for. A statement of a PL/pgSQL function takes its snapshot
    -- when it starts, after the lock: it sees every claim committed before.
    CREATE FUNCTION webhook_make_deliveries(
        r_id TEXT[], r_tenant TEXT[], r_endpoint TEXT[], r_event TEXT[], r_type TEXT[], r_payload TEXT[],
        r_due DOUBLE PRECISION[], r_created DOUBLE PRECISION[], r_inflight BOOLEAN[],
        p_now DOUBLE PRECISION, p_node TEXT, p_cap BIGINT
    ) RETURNS TABLE (o_id TEXT, o_seq BIGINT, o_inflight BOOLEAN) LANGUAGE plpgsql AS $fn$
    BEGIN
        -- Rows handed to the caller's dispatcher at once count against their
        -- endpoint's cap across the nodes (its rows in flight), as a claim does.
        IF p_cap IS NOT NULL AND true = ANY(r_inflight) THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('tierd.webhooks.claims', 0));
        END IF;
        RETURN QUERY
        WITH r AS (
            SELECT * FROM unnest(r_id, r_tenant, r_endpoint, r_event, r_type, r_payload, r_due, r_created, r_inflight)
                WITH ORDINALITY AS u(id, tenant_id, endpoint_id, event_id, event_type, payload, due_at, created_at,
                    inflight, position)
        ), busy AS (
            SELECT d.endpoint_id, COUNT(*) AS n FROM webhook_deliveries d
            WHERE d.endpoint_id IN (SELECT r.endpoint_id FROM r WHERE r.inflight) AND d.status='inflight'
            GROUP BY d.endpoint_id
        ), decided AS (
            -- In flight while the endpoint has room (cap less its rows in flight), in the rows' order.
            SELECT r.*, r.inflight AND (p_cap IS NULL OR ROW_NUMBER() OVER (
                PARTITION BY r.endpoint_id, r.inflight ORDER BY r.position) <= p_cap - COALESCE(b.n, 0)) AS sent
            FROM r LEFT JOIN busy b ON b.endpoint_id=r.endpoint_id
        ), made AS (
            INSERT INTO webhook_deliveries AS d (id, tenant_id, endpoint_id, event_id, event_type, payload,
                status, claimed_at, due_at, created_at, claimed_by)
            SELECT x.id, x.tenant_id, x.endpoint_id, x.event_id, x.event_type, x.payload,
                CASE WHEN x.sent THEN 'inflight' ELSE 'pending' END, CASE WHEN x.sent THEN p_now END,
                x.due_at, x.created_at, CASE WHEN x.sent THEN p_node END
            FROM decided x WHERE EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id=x.endpoint_id)
            -- Seqs in the rows' order, as SQLite numbers them: (created_at, seq) is event order.
            ORDER BY x.position
            ON CONFLICT DO NOTHING RETURNING d.id, d.seq, d.status='inflight'
        ) SELECT * FROM made;
    END
    $fn$;
    CREATE FUNCTION webhook_claim_due(
        p_now DOUBLE PRECISION, p_claim_id BIGINT, p_node TEXT, p_cap BIGINT, p_room JSON, p_limit BIGINT
    ) RETURNS SETOF webhook_deliveries LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended('tierd.webhooks.claims', 0));
        RETURN QUERY
        UPDATE webhook_deliveries SET status='inflight', claimed_at=p_now, claim_id=p_claim_id, claimed_by=p_node
        WHERE seq IN (
            SELECT c.seq FROM webhook_endpoints e CROSS JOIN LATERAL (
                SELECT x.seq, x.due_at FROM webhook_deliveries x
                WHERE x.endpoint_id=e.id AND x.status='pending' AND x.due_at<=p_now
                ORDER BY x.due_at LIMIT GREATEST(0, LEAST(
                    p_cap - (SELECT COUNT(*) FROM webhook_deliveries i
                        WHERE i.endpoint_id=e.id AND i.status='inflight'),
                    COALESCE((p_room->>e.id)::bigint, p_cap)))
                FOR UPDATE SKIP LOCKED
            ) c
            WHERE e.enabled=1 AND e.ordering<>'fifo' ORDER BY c.due_at LIMIT p_limit
        ) AND status='pending'
        RETURNING webhook_deliveries.*;
    END
    $fn$;
    -- One fold at a time (the cluster's job, a purge); each moves the changes
    -- committed when it starts. A deleted endpoint's delivery changes go, with no
    -- counter to add to (its counters row went with the endpoint); its minutes are
    -- folded for its purge to remove (which folds first).
    CREATE FUNCTION webhook_counts_fold() RETURNS void LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended('tierd.webhooks.fold', 0));
        WITH moved AS (DELETE FROM webhook_delivery_count_changes RETURNING *),
        total AS (
            SELECT endpoint_id, {", ".join(f"SUM({s}) AS {s}" for s in _COUNT_COLUMNS)}
            FROM moved GROUP BY endpoint_id
        )
        UPDATE webhook_delivery_counts c SET {", ".join(f"{s}=c.{s}+total.{s}" for s in _COUNT_COLUMNS)}
        FROM total WHERE c.endpoint_id=total.endpoint_id;
        WITH moved AS (DELETE FROM webhook_attempt_minute_changes RETURNING *)
        INSERT INTO webhook_attempt_minutes AS m (endpoint_id, minute, outcome, bucket, n)
        SELECT endpoint_id, minute, outcome, bucket, SUM(n) FROM moved GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (endpoint_id, minute, outcome, bucket) DO UPDATE SET n=m.n+excluded.n;
    END
    $fn$;
    """
)
