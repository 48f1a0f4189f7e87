"""The notifications tables, once per storage backend.

``SQLITE_MIGRATIONS`` and ``POSTGRESQL_MIGRATIONS`` are numbered alike:
version N of each builds the same tables, columns and indexes under the same
names (``tierd db copy`` moves rows table by table). The SQLite list is
frozen as existing databases applied it; the reasoning behind each index is
in its comments and holds for both.

PostgreSQL types are those of the values tierd stores: times ``DOUBLE
PRECISION`` seconds, counts and ids ``BIGINT``, JSON and text ``TEXT``.
"""

from __future__ import annotations

SQLITE_MIGRATIONS = [
    # 1: notifications, attempts, groups, silences.
    """
    CREATE TABLE notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        dedup_key TEXT UNIQUE,
        event_id TEXT,
        event_type TEXT,
        route TEXT,
        channel TEXT NOT NULL,
        group_id INTEGER,
        digest_id TEXT,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        severity TEXT NOT NULL DEFAULT 'info',
        subject TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        html TEXT,
        events TEXT NOT NULL DEFAULT '[]',
        event_count INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        sent_at REAL
    );
    CREATE INDEX notifications_due ON notifications(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX notifications_tenant ON notifications(tenant_id, seq);
    CREATE INDEX notifications_event ON notifications(event_id);
    CREATE INDEX notifications_group ON notifications(group_id) WHERE status = 'grouped';
    CREATE INDEX notifications_throttle ON notifications(route, channel, created_at);
    CREATE TABLE notification_attempts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        notification_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at REAL NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        duration_ms REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX notification_attempts_by_notification ON notification_attempts(notification_id, attempt);
    CREATE TABLE notification_groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_key TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        route TEXT NOT NULL,
        channel TEXT NOT NULL,
        labels TEXT NOT NULL,
        next_flush_at REAL,
        last_flush_at REAL,
        expires_at REAL,
        flushes INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX notification_groups_due ON notification_groups(next_flush_at) WHERE next_flush_at IS NOT NULL;
    CREATE TABLE notification_silences (
        id TEXT PRIMARY KEY,
        tenant_id TEXT,
        matchers TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_by TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    """,
    # 2: pages of the history and sliced retention whose cost stays flat as the table grows
    # (issue 16). A history page walks one index in seq order and stops after ``limit`` rows:
    # - tenant: notifications_tenant (tenant_id, seq), from migration 1;
    # - status: a selective filter (failed, pending, grouped, muted are a small share), so it
    #   gets (status, seq) for the admin's view of every tenant and (tenant_id, status, seq)
    #   for a tenant's (tenant + status is what people combine: "my failed notifications");
    # - channel, route, kind stay residual filters on that walk: a handful of values that
    #   each own a large share of the rows, so a page reads about limit / share rows whatever
    #   the size of the table (an index each would cost three more writes per insert and per
    #   status change on the delivery path). Test and manual sends, the rare kinds, are the
    #   operator's (tenant '') and are walked along notifications_tenant;
    # - event: its rows and digests, found through notifications_event, a handful of rows;
    # - since/until: seq bounds, each found by one seek of notifications_created (times rise
    #   with seq: a row is stamped with the daemon's clock when it is inserted).
    # notifications_created also gives retention its order: each slice of the purge walks
    # it from the oldest row. The trigger deletes a purged notification's attempts with it
    # (one seek of notification_attempts_by_notification each), so a slice is whole.
    """
    CREATE INDEX notifications_created ON notifications(created_at);
    CREATE INDEX notifications_status ON notifications(status, seq);
    CREATE INDEX notifications_tenant_status ON notifications(tenant_id, status, seq);
    CREATE TRIGGER notifications_delete_attempts AFTER DELETE ON notifications BEGIN
        DELETE FROM notification_attempts WHERE notification_id = OLD.id;
    END;
    """,
    # 3: files sent with a message (a report): JSON [{"filename", "path", "media_type"}],
    # read when the message is sent. Email attaches them; other channels ignore them.
    """
    ALTER TABLE notifications ADD COLUMN attachments TEXT;
    """,
    # 4: several nodes on one database (issue 15). A row being sent is claimed by
    # its node (``claimed_by``, a name as ``Database.node``; ``claimed_at`` when),
    # so that no other node sends it too and a node that dies leaves claims the
    # others can tell from a live node's (``Database.gone``). Only rows in flight
    # carry a claim (an outcome clears it), so the partial index stays as small
    # as what is in flight. ``notification_files`` holds the bytes of a message's
    # attachments where another node may send it (PostgreSQL): one row per file.
    # SQLite has one node, which claims nothing and reads attachments from their
    # paths as before: both stay empty there (made alike for ``tierd db copy``).
    """
    ALTER TABLE notifications ADD COLUMN claimed_by TEXT;
    ALTER TABLE notifications ADD COLUMN claimed_at REAL;
    CREATE INDEX notifications_claimed ON notifications(claimed_by) WHERE claimed_by IS NOT NULL;
    CREATE TABLE notification_files (
        notification_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (notification_id, position)
    );
    """,
]


POSTGRESQL_MIGRATIONS = [
    # 1: notifications, attempts, groups, silences (as SQLite's 1). Identity
    # columns are BY DEFAULT so that `tierd db copy` can insert the rows' own
    # values; like AUTOINCREMENT, an identity never hands out a value twice
    # (dispatch.py relies on it for digests' dedup keys).
    """
    CREATE TABLE notifications (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        dedup_key TEXT UNIQUE,
        event_id TEXT,
        event_type TEXT,
        route TEXT,
        channel TEXT NOT NULL,
        group_id BIGINT,
        digest_id TEXT,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        severity TEXT NOT NULL DEFAULT 'info',
        subject TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        html TEXT,
        events TEXT NOT NULL DEFAULT '[]',
        event_count BIGINT NOT NULL DEFAULT 0,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        last_error TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION
    );
    CREATE INDEX notifications_due ON notifications(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX notifications_tenant ON notifications(tenant_id, seq);
    CREATE INDEX notifications_event ON notifications(event_id);
    CREATE INDEX notifications_group ON notifications(group_id) WHERE status = 'grouped';
    CREATE INDEX notifications_throttle ON notifications(route, channel, created_at);
    CREATE TABLE notification_attempts (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        notification_id TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    CREATE INDEX notification_attempts_by_notification ON notification_attempts(notification_id, attempt);
    CREATE TABLE notification_groups (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        group_key TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        route TEXT NOT NULL,
        channel TEXT NOT NULL,
        labels TEXT NOT NULL,
        next_flush_at DOUBLE PRECISION,
        last_flush_at DOUBLE PRECISION,
        expires_at DOUBLE PRECISION,
        flushes BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX notification_groups_due ON notification_groups(next_flush_at) WHERE next_flush_at IS NOT NULL;
    CREATE TABLE notification_silences (
        id TEXT PRIMARY KEY,
        tenant_id TEXT,
        matchers TEXT NOT NULL,
        starts_at DOUBLE PRECISION NOT NULL,
        ends_at DOUBLE PRECISION NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_by TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: the history's and retention's indexes (see SQLite's 2 for which walk uses
    # which) and the trigger that deletes a purged notification's attempts with it.
    # It runs once per statement over the deleted rows (a transition table), so a
    # purge slice of thousands of rows deletes their attempts in one statement.
    """
    CREATE INDEX notifications_created ON notifications(created_at);
    CREATE INDEX notifications_status ON notifications(status, seq);
    CREATE INDEX notifications_tenant_status ON notifications(tenant_id, status, seq);
    CREATE FUNCTION notifications_delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM notification_attempts WHERE notification_id IN (SELECT id FROM deleted);
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER notifications_delete_attempts AFTER DELETE ON notifications
        REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION notifications_delete_attempts();
    """,
    # 3: files sent with a message (as SQLite's 3).
    """
    ALTER TABLE notifications ADD COLUMN attachments TEXT;
    """,
    # 4: claims of rows in flight and the bytes of attachments (as SQLite's 4); a
    # purged notification's files go with it, as its attempts do.
    """
    ALTER TABLE notifications ADD COLUMN claimed_by TEXT;
    ALTER TABLE notifications ADD COLUMN claimed_at DOUBLE PRECISION;
    CREATE INDEX notifications_claimed ON notifications(claimed_by) WHERE claimed_by IS NOT NULL;
    CREATE TABLE notification_files (
        notification_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        content BYTEA NOT NULL,
        PRIMARY KEY (notification_id, position)
    );
    CREATE OR REPLACE FUNCTION notifications_delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM notification_attempts WHERE notification_id IN (SELECT id FROM deleted);
        DELETE FROM notification_files WHERE notification_id IN (SELECT id FROM deleted);
        RETURN NULL;
    END
    $$;
    """,
]
