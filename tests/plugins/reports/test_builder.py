"""The report builder on a real SQLite file made by the real migrations:
definitions checked, compiled to bound SQL, run; hostile definitions and
parameter values change nothing, run nothing and show no other tenant's rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import sys
import types
from decimal import Decimal

import pytest
import yaml

from tierd.core.config import ConfigError
from tierd.core.daemon import all_migrations, prepare
from tierd.core.plugins import hookimpl, make_plugin_manager
from tierd.core.registry import collect_registries
from tierd.core.schema import Obj
from tierd.core.storage import Database
from tierd.plugins.reports import core_source
from tierd.plugins.reports.builder import (
    DefinitionError,
    ParamError,
    ReportTooLarge,
    build_report,
    load_reports,
    resolve_period,
    stream,
)
from tierd.plugins.reports.definitions import definitions_field

DAY = 86400.0
#: 2026-11-10T00:00:00Z
T0 = dt.datetime(2026, 11, 10, tzinfo=dt.UTC).timestamp()
HOSTILE = [
    "'",
    "x' OR '1'='1",
    "'; DROP TABLE events; --",
    "globex",
    "acme') OR 1=1 --",
    "1; DELETE FROM recon_bank_lines",
    "/* */ UNION SELECT * FROM tokens --",
    "\x00",
    "é" * 900,
]


def plugin_manager():
    # The builder and the sources are tested, not the reports plugin's shell.
    return make_plugin_manager(["reports"], load_entrypoints=False)


def registries():
    regs = collect_registries(plugin_manager())
    # The reports plugin registers core's source; done here too in case it is not loaded.
    for source in core_source.SOURCES:
        regs.report_sources.setdefault(source.name, source)
    return regs


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("reports") / "tierd.db"

    async def make():
        db = Database(str(path))
        await db.open()
        await db.migrate(all_migrations(plugin_manager()))
        await db.close()

    asyncio.run(make())
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO events (id, tenant_id, type, data, created_at) VALUES (?,?,?,?,?)",
            [
                ("e1", "acme", "invoice.paid", "{}", T0 + 10),
                ("e2", "acme", "invoice.paid", "{}", T0 + DAY + 10),
                ("e3", "acme", "invoice.sent", "{}", T0 + 2 * DAY - 1),
                ("e4", "globex", "invoice.paid", "{}", T0 + 20),
                ("e5", "globex", "secret.type", "{}", T0 + 30),
                # 23:30 UTC on the 10th is the 11th in Zurich (UTC+1 in November).
                ("e6", "acme", "late.event", "{}", T0 + DAY - 1800),
            ],
        )
        lines = [("acme", "a1", "0.10", "EUR", "2026-11-01")] * 10 + [("acme", "a1", "0.20", "EUR", "2026-11-09")] * 10
        lines += [
            ("acme", "a1", "1000000000000.01", "CHF", "2026-08-01"),
            ("globex", "g1", "777.77", "EUR", "2026-11-01"),
        ]
        conn.executemany(
            "INSERT INTO recon_bank_lines (tenant_id, account_id, import_id, amount, currency, booking_date,"
            " dedup_key, created_at) VALUES (?,?,'i1',?,?,?, hex(randomblob(8)), 0)",
            lines,
        )
    conn.close()
    return path


@pytest.fixture
def conn(db_path):
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    yield conn
    conn.close()


def rows(conn, report, tenant, raw=None, max_rows=1000, timezone="UTC", today=dt.date(2026, 11, 20), now=None):
    params = report.parse_params(raw or {}, timezone=timezone, today=today)
    query = report.compile(tenant, params, max_rows, timezone=timezone, now=now)
    return list(stream(conn, report, query))


EVENTS_BY_TYPE = {
    "source": "core.events",
    "parameters": {
        "type": {"type": "text"},
        "from": {"type": "date"},
        "to": {"type": "date"},
    },
    "filters": ["type = :type", "created_at >= :from", "created_at <= :to"],
    "columns": ["type", {"name": "n", "expr": "count()"}],
    "group_by": ["type"],
    "order_by": ["type"],
}


def events_report(**changes):
    return build_report("by_type", {**EVENTS_BY_TYPE, **changes}, registries().report_sources)


# --- compiling and running --------------------------------------------------------------------


def test_a_report_reads_its_tenant_rows_only(conn):
    report = events_report()
    assert rows(conn, report, "acme") == [("invoice.paid", 2), ("invoice.sent", 1), ("late.event", 1)]
    assert rows(conn, report, "globex") == [("invoice.paid", 1), ("secret.type", 1)]
    assert rows(conn, report, None) == [("invoice.paid", 3), ("invoice.sent", 1), ("late.event", 1), ("secret.type", 1)]
    assert rows(conn, report, "nobody") == []


def test_values_are_bound_never_pasted(conn):
    report = events_report()
    for value in HOSTILE:
        if "\x00" in value:
            continue
        params = report.parse_params({"type": value}, today=dt.date(2026, 11, 20))
        query = report.compile("acme", params, 1000)
        assert value not in query.sql
        assert value in query.params.values()
        assert query.params["tenant"] == "acme"
        assert list(stream(conn, report, query)) == []  # no type has such a name
    # The other tenant's own type, asked for by acme: nothing.
    assert rows(conn, report, "acme", {"type": "secret.type"}) == []
    assert rows(conn, report, "acme", {"type": "globex"}) == []
    conn.execute("SELECT COUNT(*) FROM events").fetchone()  # the table is still there


def test_the_tenant_is_no_parameter_and_reserved_names_are_refused(conn):
    report = events_report()
    for key in ("tenant", "tenant_id", "limit", "now", "'; --"):
        with pytest.raises(ParamError) as caught:
            report.parse_params({key: "globex"})
        assert "no such parameter" in caught.value.message
    for name in ("tenant", "now", "limit", "max_rows"):
        with pytest.raises(DefinitionError, match="reserved"):
            events_report(parameters={name: {"type": "text"}}, filters=[])


def test_tenant_isolation_whatever_the_parameters(conn):
    report = build_report(
        "everything",
        {
            "source": "core.events",
            "parameters": {"type": "text", "from": "date", "to": "date"},
            "filters": ["type = :type or type != :type or :type is null", "created_at >= :from", "created_at <= :to"],
            "columns": ["tenant", "event_id", "type"],
        },
        registries().report_sources,
    )
    for raw in [{}, {"type": "secret.type"}, {"type": "' OR 1=1 --"}, {"from": "2000-01-01", "to": "2100-01-01"}]:
        got = rows(conn, report, "acme", raw)
        assert got and {r[0] for r in got} == {"acme"}
        assert "secret.type" not in {r[2] for r in got}


def test_nothing_but_reads_runs(conn):
    """An authorizer that refuses anything but reading: every report still runs."""
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}

    def authorizer(action, *args):
        return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY

    regs = registries()
    regs.reports.setdefault("event_volume", core_source.EVENT_VOLUME)
    reports = load_reports(regs, {})
    for report in reports.values():
        report.prepare(conn)
    conn.set_authorizer(authorizer)
    try:
        for report in reports.values():
            for value in HOSTILE[:7]:
                raw = {name: value for name, p in report.parameters.items() if p.type == "text" and not p.choices}
                list(stream(conn, report, report.compile("acme", report.parse_params(raw), 1000)))
    finally:
        conn.set_authorizer(None)


def test_conditions_count_and_average(conn):
    report = build_report(
        "shares",
        {
            "source": "reconciliation.lines",
            "columns": [
                {"name": "small", "expr": "count(amount < 0.15)"},
                {"name": "share", "expr": "round(avg(amount < 0.15), 4)"},
                {"name": "rows", "expr": "count(amount)"},
            ],
        },
        registries().report_sources,
    )
    assert rows(conn, report, "acme") == [(10, "0.4762", 21)]


def test_decimal_sums_are_exact(conn):
    report = build_report(
        "totals",
        {
            "source": "reconciliation.lines",
            "columns": [
                "currency",
                {"name": "n", "expr": "count()"},
                {"name": "total", "expr": "sum(amount)"},
                {"name": "biggest", "expr": "max(amount)"},
                {"name": "smallest", "expr": "min(amount)"},
                {"name": "mean", "expr": "avg(amount)"},
                {"name": "p50", "expr": "p50(amount)"},
                {"name": "p95", "expr": "p95(amount)"},
                {"name": "doubled", "expr": "sum(amount * 2 + 0.005)"},
            ],
            "group_by": ["currency"],
            "order_by": ["currency"],
        },
        registries().report_sources,
    )
    assert [c.type for c in report.columns] == ["text", "integer", *["decimal"] * 7]
    got = rows(conn, report, "acme")
    assert got == [
        ("CHF", 1, "1000000000000.01", "1000000000000.01", "1000000000000.01", "1000000000000.01", "1000000000000.01",
         "1000000000000.01", "2000000000000.025"),
        ("EUR", 20, "3.00", "0.20", "0.10", "0.15", "0.10", "0.20", "6.100"),
    ]  # fmt: skip
    assert Decimal(got[1][2]) == Decimal("3")  # exactly, where a float sum drifts


def test_filters_on_decimals_compare_exactly(conn):
    report = build_report(
        "big",
        {
            "source": "reconciliation.lines",
            "parameters": {"min": {"type": "decimal", "default": "0.2"}},
            "filters": ["amount >= :min"],
            "columns": [{"name": "n", "expr": "count()"}],
        },
        registries().report_sources,
    )
    assert rows(conn, report, "acme") == [(11,)]
    assert rows(conn, report, "acme", {"min": "1000000000000.01"}) == [(1,)]
    assert rows(conn, report, "acme", {"min": "1000000000000.011"}) == [(0,)]
    with pytest.raises(ParamError):
        report.parse_params({"min": "NaN"})
    with pytest.raises(ParamError):
        report.parse_params({"min": "1e999999"})


def test_age_buckets_and_case(conn):
    report = build_report(
        "aging",
        {
            "source": "reconciliation.lines",
            "columns": [
                {
                    "name": "age",
                    "expr": "case when age_days(booking_date) <= 7 then '0-7' when age_days(booking_date) <= 30 "
                    "then '8-30' when age_days(booking_date) <= 90 then '31-90' else '>90' end",
                },
                {"name": "n", "expr": "count()"},
                {"name": "amount", "expr": "sum(amount)"},
            ],
            "group_by": ["age"],
            "order_by": ["min(age_days(booking_date))"],
        },
        registries().report_sources,
    )
    now = dt.datetime(2026, 11, 12, 12, tzinfo=dt.UTC).timestamp()
    assert rows(conn, report, "acme", now=now) == [
        ("0-7", 10, "2.00"),
        ("8-30", 10, "1.00"),
        (">90", 1, "1000000000000.01"),
    ]


def test_dates_in_a_time_zone(conn):
    per_day = build_report(
        "per_day",
        {
            "source": "core.events",
            "parameters": {"from": {"type": "date"}, "to": {"type": "date"}},
            "filters": ["created_at >= :from", "created_at <= :to"],
            "columns": [{"name": "day", "expr": "day(created_at)"}, {"name": "n", "expr": "count()"}],
            "group_by": ["day"],
            "order_by": ["day"],
        },
        registries().report_sources,
    )
    assert rows(conn, per_day, "acme") == [("2026-11-10", 2), ("2026-11-11", 2)]
    assert rows(conn, per_day, "acme", timezone="Europe/Zurich") == [
        ("2026-11-10", 1),
        ("2026-11-11", 2),
        ("2026-11-12", 1),
    ]
    # "to" includes its whole day, in the report's time zone.
    assert rows(conn, per_day, "acme", {"from": "2026-11-10", "to": "2026-11-10"}) == [("2026-11-10", 2)]
    assert rows(conn, per_day, "acme", {"from": "2026-11-10", "to": "2026-11-10"}, timezone="Europe/Zurich") == [
        ("2026-11-10", 1)
    ]
    assert rows(conn, per_day, "acme", {"from": "2026-11-11"}) == [("2026-11-11", 2)]
    weekly = build_report(
        "weekly",
        {
            "source": "core.events",
            "columns": [
                {"name": "week", "expr": "week(created_at)"},
                {"name": "month", "expr": "month(created_at)"},
                {"name": "n", "expr": "count()"},
            ],
            "group_by": ["week", "month"],
        },
        registries().report_sources,
    )
    assert rows(conn, weekly, "acme") == [("2026-11-09", "2026-11-01", 4)]  # 2026-11-10 is a Tuesday


def test_relative_periods():
    today = dt.date(2026, 11, 11)  # a Wednesday
    assert resolve_period("last_week", False, today) == dt.date(2026, 11, 2)
    assert resolve_period("last_week", True, today) == dt.date(2026, 11, 8)
    assert resolve_period("last_month", False, today) == dt.date(2026, 10, 1)
    assert resolve_period("last_month", True, today) == dt.date(2026, 10, 31)
    assert resolve_period("month_to_date", False, today) == dt.date(2026, 11, 1)
    assert resolve_period("last_7_days", False, today) == dt.date(2026, 11, 5)
    assert resolve_period("last_30_days", False, today) == dt.date(2026, 10, 13)
    assert resolve_period("yesterday", True, today) == dt.date(2026, 11, 10)
    report = events_report(parameters={"from": {"type": "date", "default": "last_week"}, "to": "date"}, filters=[])
    assert report.parse_params({"to": "last_week"}, today=today) == {
        "from": dt.date(2026, 11, 2),
        "to": dt.date(2026, 11, 8),
    }
    # Resolved in the time zone given: at 23:30 UTC it is already tomorrow in Zurich.
    got = report.parse_params({"to": "today"}, timezone="Pacific/Kiritimati")
    assert got["to"] == dt.datetime.now(dt.timezone(dt.timedelta(hours=14))).date()
    with pytest.raises(ParamError, match="did you mean 'last_week'"):
        report.parse_params({"to": "last_weak"})


def test_parameter_types_choices_and_required():
    report = events_report(
        parameters={
            "type": {"type": "text", "choices": ["invoice.paid", "invoice.sent"], "required": True},
            "n": {"type": "integer", "default": 5},
            "flag": {"type": "boolean", "default": False},
        },
        filters=["type = :type"],
    )
    assert report.parse_params({"type": "invoice.paid", "n": "7", "flag": "true"}) == {
        "type": "invoice.paid",
        "n": 7,
        "flag": True,
    }
    for raw, message in [
        ({}, "required"),
        ({"type": "secret.type"}, "one of"),
        ({"type": "invoice.paid", "n": "7; DROP"}, "integer"),
        ({"type": "invoice.paid", "n": str(2**70)}, "integer"),
        ({"type": "invoice.paid", "n": True}, "boolean"),
        ({"type": "invoice.paid", "flag": "perhaps"}, "true or false"),
        ({"type": "\ud800"}, "Unicode"),
        ({"type": "x" * 5000}, "longer"),
        ({"type": ["invoice.paid"]}, "text"),
    ]:
        with pytest.raises(ParamError, match=message):
            report.parse_params(raw)
    for zone in ("Mars/Base", "../../etc/passwd", "UTC'; --"):
        with pytest.raises(ParamError, match="time zone"):
            report.parse_params({"type": "invoice.paid"}, timezone=zone)
        with pytest.raises(ParamError, match="time zone"):
            report.compile("acme", {"type": "invoice.paid"}, 10, timezone=zone)
    # compile takes typed values only: a raw string for an integer is refused, not pasted.
    with pytest.raises(ParamError):
        report.compile("acme", {"type": "invoice.paid", "n": "1) OR (1=1", "flag": False}, 10)


def test_row_limits(conn):
    report = build_report("all", {"source": "core.events", "columns": ["event_id"]}, registries().report_sources)
    with pytest.raises(ReportTooLarge):
        rows(conn, report, "acme", max_rows=3)
    assert len(rows(conn, report, "acme", max_rows=4)) == 4
    limited = build_report(
        "few", {"source": "core.events", "columns": ["event_id"], "limit": 2}, registries().report_sources
    )
    assert len(rows(conn, limited, "acme", max_rows=3)) == 2
    for limit in (10**12, 0, -1, "5; --", True):
        with pytest.raises(DefinitionError, match="whole number"):
            build_report("x", {"source": "core.events", "limit": limit}, registries().report_sources)


def test_explain_shows_sql_and_parameters():
    report = events_report()
    text = report.explain("acme", report.parse_params({"type": "it's"}))
    assert "FROM (SELECT e.tenant_id AS tenant" in text and "src.tenant = :tenant" in text
    assert ":tenant = 'acme'" in text and '"it\'s"' in text
    assert "it's" not in text.split("-- parameters:")[0]


# --- hostile and wrong definitions ------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, path, message",
    [
        ({"source": "core.event"}, ("source",), "did you mean 'core.events'"),
        ({"columns": ["tenant) OR 1=1 --"]}, ("columns", 0), "unknown column"),
        ({"columns": [{"name": "x", "expr": "typ"}]}, ("columns", 0, "expr"), "did you mean 'type'"),
        ({"columns": [{"name": "x", "expr": "type; DROP TABLE events"}]}, ("columns", 0, "expr"), "unexpected"),
        ({"columns": [{"name": "x", "expr": "type -- comment"}]}, ("columns", 0, "expr"), ""),
        ({"columns": [{"name": "x", "expr": "/* */ type"}]}, ("columns", 0, "expr"), ""),
        ({"columns": [{"name": "x", "expr": "load_extension('x')"}]}, ("columns", 0, "expr"), "unknown function"),
        ({"columns": [{"name": "x", "expr": "(select 1)"}]}, ("columns", 0, "expr"), "unknown column 'select'"),
        ({"columns": [{"name": "x", "expr": "cuont()"}]}, ("columns", 0, "expr"), "did you mean 'count'"),
        ({"columns": [{"name": "x", "expr": '"type"'}]}, ("columns", 0, "expr"), "unexpected character"),
        ({"columns": [{"name": "x", "expr": "sum(sum(seq))"}]}, ("columns", 0, "expr"), "inside an aggregate"),
        ({"columns": [{"name": "x", "expr": "sum(type)"}]}, ("columns", 0, "expr"), "numbers"),
        ({"columns": [{"name": 'x" FROM tokens --', "expr": "type"}]}, ("columns", 0, "name"), "identifier"),
        ({"columns": ["type", {"name": "n", "expr": "count()"}], "group_by": []}, ("columns", 0), "neither in"),
        ({"filters": ["count() > 1"]}, ("filters", 0), "aggregate"),
        ({"filters": ["type"]}, ("filters", 0), "condition"),
        ({"filters": ["type = :nope"]}, ("filters", 0), "unknown parameter"),
        ({"filters": ["created_at > 'yesterday'"]}, ("filters", 0), "cannot compare"),
        ({"filters": ["created_at in ('2026-01-01')"]}, ("filters", 0), "instant is compared with dates"),
        ({"group_by": ["tyep"]}, ("group_by", 0), "did you mean 'type'"),
        ({"order_by": ["nope; DROP TABLE x"]}, ("order_by", 0), "unexpected"),
        ({"chart": {"type": "pie", "x": "type", "y": ["n"]}}, ("chart", "type"), "line or bar"),
        ({"chart": {"type": "bar", "x": "type", "y": ["nn"]}}, ("chart", "y", 0), "did you mean 'n'"),
        ({"parameters": {"x": {"type": "float"}}}, ("parameters", "x", "type"), "unknown type"),
        ({"parameters": {"x": {"type": "date", "default": "tomorrow"}}}, ("parameters", "x", "default"), "not a date"),
        ({"colums": []}, ("colums",), "did you mean 'columns'"),
        ({"filters": ["(" * 100 + "type = 'x'" + ")" * 100]}, ("filters", 0), "nested too deeply"),
        ({"filters": ["not " * 100 + "type = 'x'"]}, ("filters", 0), "says nothing"),
        ({"filters": ["abs(-" * 10 + "seq" + ")" * 10 + " > 0"]}, ("filters", 0), "nested too deeply"),
        ({"filters": ["seq = " + "-" * 100 + "1"]}, ("filters", 0), "says nothing"),
        ({"filters": ["seq = " + "+".join(["1"] * 600)]}, ("filters", 0), "too long"),
        ({"filters": ["seq = 1 " + "and seq = 1 " * 150]}, ("filters", 0), "too long"),
        ({"filters": ["type = 'x'" * 300]}, ("filters", 0), "longer than"),
    ],
)
def test_wrong_definitions_name_their_key(spec, path, message):
    base = {
        "source": "core.events",
        "columns": ["type", {"name": "n", "expr": "count()"}],
        "group_by": ["type"],
    }
    with pytest.raises(DefinitionError) as caught:
        build_report("bad", {**base, **spec}, registries().report_sources)
    assert caught.value.path == path
    assert message in caught.value.message


def test_the_longest_expressions_compile_and_run(conn):
    """Chains are written flat (SQLite's parser has a bounded stack), nesting is bounded."""
    chain = "+".join(["1"] * 150)
    nested = "(" * 15 + "seq" + ")" * 15
    ands = " and ".join(["seq > 0"] * 95)
    sources = registries().report_sources
    report = build_report(
        "long",
        {
            "source": "core.events",
            "filters": [f"seq + {nested} < {chain}", ands],
            "columns": [{"name": "n", "expr": "count()"}],
        },
        sources,
    )
    assert rows(conn, report, "acme") == [(4,)]
    money = build_report(
        "money",
        {
            "source": "reconciliation.lines",
            "filters": ["currency = 'EUR'"],
            "columns": [{"name": "x", "expr": "sum(" + " + ".join(["amount"] * 120) + " - amount * 2 / 4)"}],
        },
        sources,
    )
    assert rows(conn, money, "acme") == [("358.50",)]  # 3.00 * 120 - 3.00 / 2, exactly


def test_shipped_reports_load_and_configured_ones_cannot_take_their_names():
    regs = registries()
    regs.reports.setdefault("event_volume", core_source.EVENT_VOLUME)
    reports = load_reports(regs, {"mine": {"source": "core.events", "columns": ["type"]}})
    assert {"webhook_deliveries", "webhook_failures", "notification_activity", "reconciliation_summary",
            "open_items_aging", "event_volume", "mine"} <= set(reports)  # fmt: skip
    assert reports["mine"].origin == "config"
    assert reports["webhook_deliveries"].origin.endswith("webhooks")
    with pytest.raises(DefinitionError, match="shipped by plugin"):
        load_reports(regs, {"webhook_failures": {"source": "core.events"}})
    with pytest.raises(DefinitionError) as caught:
        load_reports(regs, {"mine": {"source": "core.events", "columns": ["tipe"]}})
    assert str(caught.value).startswith("reports.definitions.mine: columns[0]: unknown column 'tipe'")


def test_check_config_names_file_line_and_key(tmp_path):
    """Through the configuration loader (a test section holding the field, as the
    reports section does): errors carry file, line, key and a did-you-mean."""
    plugin = types.ModuleType("reportdefs_test_plugin")

    @hookimpl
    def tierd_config_schema(registries):
        return {"reportdefs_test": Obj({"definitions": definitions_field(registries)})}

    plugin.tierd_config_schema = tierd_config_schema
    sys.modules[plugin.__name__] = plugin
    config = {
        "storage": {"path": str(tmp_path / "t.db")},
        "reportdefs_test": {
            "definitions": {
                "good": {"source": "webhooks.deliveries", "columns": ["status", {"name": "n", "expr": "count()"}],
                         "group_by": ["status"]},
                "bad": {"source": "webhooks.deliveries", "columns": ["statu", {"name": "n", "expr": "cnt()"}]},
                "worse": {"source": "webhook.deliveries"},
            }
        },
    }  # fmt: skip
    path = tmp_path / "tierd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        with pytest.raises(ConfigError) as caught:
            prepare(path, plugins=[plugin])
    finally:
        del sys.modules[plugin.__name__]
    errors = caught.value.errors
    text = "\n".join(errors)
    lines = path.read_text().splitlines()
    bad = next(e for e in errors if "definitions.bad.columns[0]" in e)
    line = int(bad.split(":")[1])
    assert "statu" in lines[line - 1]
    assert "did you mean 'status'" in bad
    # Every mistake of a definition at once, each on its own line.
    assert any(
        "definitions.bad.columns[1].expr: unknown function cnt()" in e and "did you mean 'count'" in e for e in errors
    )
    assert "definitions.worse.source: unknown source 'webhook.deliveries' (did you mean 'webhooks.deliveries'?)" in text
    assert "good" not in text


def test_every_source_runs_and_has_its_declared_columns(conn):
    sources = registries().report_sources
    assert {"core.events", "webhooks.deliveries", "webhooks.attempts", "webhooks.endpoints", "notifications.messages",
            "reconciliation.lines", "reconciliation.ledger", "reconciliation.matches", "reconciliation.runs",
            "reconciliation.open_items", "reconciliation.run_matches"} <= set(sources)  # fmt: skip
    for source in sources.values():
        cursor = conn.execute(f"SELECT * FROM ({source.sql}) LIMIT 0")
        names = {d[0] for d in cursor.description}
        assert {"tenant", *(c.name for c in source.columns)} <= names, source.name
        assert all(c.description for c in source.columns), source.name
        # Every column, through the builder (types checked by the reading).
        report = build_report("all_" + source.name.replace(".", "_"), {"source": source.name}, sources)
        rows(conn, report, "acme")


def test_junk_in_any_key_is_a_definition_error():
    """Whatever a definition holds, building it answers a report or a DefinitionError."""
    import itertools
    import random

    junk = [None, True, 0, -1, 10**30, 1.5, "", " ", "x", "'", ";", "--", "\ud800", "é", [], [None], [[]], {}, {"a": 1},
            ["type"], [{"name": "x"}], [{"name": "n", "expr": ["count()"]}], {"type": "bar", "x": ["type"], "y": [{}]},
            {"x": {"type": "date", "default": []}}, "count(", "case when", ":", "1..2", "a.b", "(" * 30]  # fmt: skip
    keys = ["title", "description", "source", "parameters", "filters", "columns", "group_by", "order_by", "limit",
            "chart"]  # fmt: skip
    sources = registries().report_sources
    rng = random.Random(12)
    cases = [{k: v} for k, v in itertools.product(keys, junk)]
    cases += [{k: rng.choice(junk) for k in rng.sample(keys, 4)} for _ in range(300)]
    for case in cases:
        spec = {"source": "core.events", **case}
        try:
            report = build_report("junk", spec, sources)
        except DefinitionError:
            continue
        report.compile("acme", report.parse_params({}), 10)
