"""Event types are declared by the plugin that publishes them: the catalogue
(GET /v1/event-types, `tierd events types`), a tenant's own types as seen, a
third party's declarations, and refusals of bad ones at startup."""

import json
import textwrap

import pytest

from tierd.core.event_types import SEEN_SQL
from tierd.core.plugins import hookimpl, make_plugin_manager
from tierd.core.registry import EventType, RegistryError, collect_registries
from tierd.core.storage import CORE_MIGRATIONS, Database

WEBHOOKS = "tierd.plugins.webhooks"
RECONCILIATION = "tierd.plugins.reconciliation"
REPORTS = "tierd.plugins.reports"
#: Every event type the built-in plugins publish: (plugin, severity, operator alert, sent as webhooks).
BUILTIN = {
    "webhook.endpoint.created": (WEBHOOKS, "info", False, False),
    "webhook.endpoint.updated": (WEBHOOKS, "info", False, False),
    "webhook.endpoint.secret_rotated": (WEBHOOKS, "info", False, False),
    "webhook.endpoint.deleted": (WEBHOOKS, "info", False, False),
    "webhook.endpoint.disabled": (WEBHOOKS, "warning", True, True),
    "webhook.delivery.failed": (WEBHOOKS, "warning", True, False),
    "webhook.endpoint.blocked": (WEBHOOKS, "warning", True, False),
    "webhook.endpoint.unblocked": (WEBHOOKS, "info", True, False),
    "reconciliation.statement.imported": (RECONCILIATION, "info", False, True),
    "reconciliation.run.completed": (RECONCILIATION, "info", False, True),
    "reconciliation.exceptions": (RECONCILIATION, "warning", True, True),
    "report.generated": (REPORTS, "info", False, True),
    "report.failed": (REPORTS, "warning", True, True),
}
HOOKS = {"allow_http": True, "allow_destinations": ["127.0.0.1/32"], "retry_schedule": ["0s", "1s"]}

#: A third-party plugin, loaded by path (never installed): it declares an
#: operator alert that is never sent as a webhook, with its own default text.
THIRD_PARTY = """
from tierd.core.plugins import hookimpl
from tierd.core.registry import EventType


@hookimpl
def tierd_register_event_types(register):
    register(EventType(
        "stock.level.low", "A warehouse item fell below its reorder level.",
        data_schema={"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}},
        severity="critical", operator_alert=True, webhook=False,
        subject="Low stock: {{ data.sku }}", body="Reorder {{ data.sku }} for tenant {{ tenant }}."))
"""


def plugin_dir(tmp_path, name: str, source: str):
    folder = tmp_path / f"plugin-{name}"
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def catalogue(d, token=None, tenant=None, limit=None) -> list[dict]:
    """Every page of GET /v1/event-types."""
    entries, cursor = [], None
    while True:
        params = "&".join(f"{k}={v}" for k, v in (("limit", limit), ("cursor", cursor)) if v)
        status, body = d.request(
            "GET", "/v1/event-types" + (f"?{params}" if params else ""), token=token, tenant=tenant
        )
        assert status == 200, body
        entries += body["data"]
        cursor = body["next_cursor"]
        if not cursor:
            return entries


def test_catalogue_lists_what_builtins_declare_with_their_flags(tierd_daemon):
    d = tierd_daemon()
    token = d.create_tenant("acme")
    entries = catalogue(d, token=token)
    by_name = {e["name"]: e for e in entries}
    assert set(BUILTIN) <= set(by_name)
    for name, (plugin, severity, operator_alert, webhook) in BUILTIN.items():
        e = by_name[name]
        assert (e["plugin"], e["severity"], e["operator_alert"], e["webhook"], e["declared"]) == (
            plugin,
            severity,
            operator_alert,
            webhook,
            True,
        ), name
        assert e["description"] and "\n" not in e["description"]
        assert e["data_schema"]["type"] == "object" and e["data_schema"]["properties"], name
    assert "url" in by_name["webhook.endpoint.disabled"]["data_schema"]["properties"]
    assert "count" in by_name["reconciliation.exceptions"]["data_schema"]["properties"]
    # Sorted by name, and paging (2 a page) walks the same list.
    assert [e["name"] for e in entries] == sorted(by_name)
    assert catalogue(d, token=token, limit=2) == entries
    # The admin token sees the same declarations.
    assert catalogue(d) == entries

    # The CLI prints them through the API.
    r = d.cli("events", "types", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == entries
    r = d.cli("events", "types")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("webhook.delivery.failed "))
    assert line.split()[1:4] == [WEBHOOKS, "warning", "operator-alert,no-webhook"]


def test_a_tenants_own_types_are_listed_as_seen_never_another_tenants(tierd_daemon):
    d = tierd_daemon()
    acme, globex = d.create_tenant("acme"), d.create_tenant("globex")
    assert "invoice.paid" not in {e["name"] for e in catalogue(d, token=acme)}
    for token, type_ in (
        (acme, "invoice.paid"),
        (acme, "invoice.paid"),
        (acme, "order.created"),
        (globex, "parcel.shipped"),
    ):
        assert d.request("POST", "/v1/events", {"type": type_}, token=token)[0] == 202

    mine = {e["name"]: e for e in catalogue(d, token=acme)}
    assert {"invoice.paid", "order.created"} <= set(mine) and "parcel.shipped" not in mine
    seen = mine["invoice.paid"]
    assert seen["declared"] is False and seen["plugin"] is None and seen["webhook"] is True
    assert seen["last_seen_at"].endswith("Z")
    assert mine["webhook.delivery.failed"]["last_seen_at"] is None  # declared, never seen by acme
    theirs = {e["name"] for e in catalogue(d, token=globex)}
    assert "parcel.shipped" in theirs and not {"invoice.paid", "order.created"} & theirs
    # The admin sees a tenant's when it names one, and declarations only when it does not.
    assert "parcel.shipped" in {e["name"] for e in catalogue(d, tenant="globex")}
    assert {e["name"] for e in catalogue(d)} == set(BUILTIN)

    r = d.cli("events", "types", "--tenant", "acme")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("invoice.paid "))
    assert line.split()[1:4] == ["seen", "info", "-"]
    assert "parcel.shipped" not in r.stdout


async def test_a_third_party_plugin_declares_a_type_that_others_honour(tierd_daemon, receiver, tmp_path):
    hooks, ops = await receiver(), await receiver()
    d = tierd_daemon(
        {
            "webhooks": HOOKS,
            "notifications": {
                "channels": {"ops": {"type": "webhook", "url": ops.url}},
                "operator_alerts": "ops",
                "operator_group_wait": "0s",
            },
        },
        plugins=["stock_alerts"],
        pythonpath=[plugin_dir(tmp_path, "stock_alerts", THIRD_PARTY)],
    )
    token = d.create_tenant("acme")
    (declared,) = [e for e in catalogue(d, token=token) if e["name"] == "stock.level.low"]
    assert declared == {
        "name": "stock.level.low",
        "description": "A warehouse item fell below its reorder level.",
        "declared": True,
        "plugin": "stock_alerts",
        "severity": "critical",
        "operator_alert": True,
        "webhook": False,
        "last_seen_at": None,
        "data_schema": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}},
    }

    # An endpoint subscribed to everything: the endpoint's own audit events
    # (created, updated) and the third party's type are not sent to it; the
    # event published after them is, and only it.
    status, ep = await d.arequest("POST", "/v1/webhooks", {"url": hooks.url + "/all"}, token=token)
    assert status == 201, ep
    status, _ = await d.arequest("PUT", f"/v1/webhooks/{ep['id']}", {"description": "everything"}, token=token)
    assert status == 200
    for type_, data in (("stock.level.low", {"sku": "A-1"}), ("invoice.paid", {"n": 1})):
        status, _ = await d.arequest("POST", "/v1/events", {"type": type_, "data": data}, token=token)
        assert status == 202
    # The webhooks consumer handles events in order: once the last one is
    # delivered, it has passed the others, and made no delivery of them.
    await hooks.wait_for(1)
    status, deliveries = await d.arequest("GET", f"/v1/webhooks/{ep['id']}/deliveries", token=token)
    assert status == 200, deliveries
    assert [x["event_type"] for x in deliveries["data"]] == ["invoice.paid"]
    assert [b["type"] for b in hooks.json_bodies()] == ["invoice.paid"]
    # Notifications sends the operator alert with the text its plugin declared, at its severity.
    await ops.wait_for(1)
    alert = ops.json_bodies()[0]
    assert (alert["subject"], alert["body"], alert["severity"]) == (
        "Low stock: A-1",
        "Reorder A-1 for tenant acme.",
        "critical",
    )


@pytest.mark.parametrize(
    "source,message",
    [
        ('register(EventType("Stock Low", "A bad name."))', "'Stock Low' is not a dotted lowercase event type"),
        (
            'register(EventType("webhook.delivery.failed", "Ours now."))',
            "registered event_types 'webhook.delivery.failed', already registered by 'tierd.plugins.webhooks'",
        ),
    ],
)
def test_a_bad_or_duplicate_declaration_stops_the_daemon_at_startup(tierd_daemon, tmp_path, source, message):
    plugin = THIRD_PARTY.split("@hookimpl")[0] + f"@hookimpl\ndef tierd_register_event_types(register):\n    {source}\n"
    d = tierd_daemon(plugins=["bad_types"], pythonpath=[plugin_dir(tmp_path, "bad_types", plugin)], start=False)
    d.start(wait=False)
    assert d.proc.wait(30) == 1
    logs = d.logs()
    assert "tierd: refusing to start: plugin 'bad_types'" in logs and message in logs, logs
    assert "Traceback" not in logs


class Declares:
    def __init__(self, *event_types):
        self.event_types = event_types

    @hookimpl
    def tierd_register_event_types(self, register):
        for event_type in self.event_types:
            register(event_type)


@pytest.mark.parametrize(
    "declared,message",
    [
        (EventType("a.b" * 100, "Too long."), "is not a dotted lowercase event type"),
        (EventType("stock.*", "A pattern."), "is not a dotted lowercase event type"),
        (EventType("stock.low", ""), "description must be one non-empty line"),
        (EventType("stock.low", "Two\nlines."), "description must be one non-empty line"),
        (EventType("stock.low", "Low.", severity="fatal"), "severity 'fatal' is not one of info, warning, critical"),
        (EventType("stock.low", "Low.", webhook="no"), "webhook must be true or false"),
        (EventType("stock.low", "Low.", subject=None), "subject must be a string"),
        (EventType("stock.low", "Low.", data_schema={"maximum": float("nan")}), "data_schema is not JSON"),
        (EventType("stock.low", "Low.", data_schema=["object"]), "data_schema must be a JSON Schema"),
    ],
)
def test_core_refuses_malformed_declarations(declared, message):
    pm = make_plugin_manager(builtins=(), load_entrypoints=False)
    pm.register(Declares(declared), name="stock")
    with pytest.raises(RegistryError, match=f"plugin 'stock' registered event_types .*{message}"):
        collect_registries(pm)


def test_only_event_type_objects_are_accepted_and_one_plugin_cannot_declare_twice():
    class Named:
        name = "stock.low"

    pm = make_plugin_manager(builtins=(), load_entrypoints=False)
    pm.register(Declares(Named()), name="stock")
    with pytest.raises(RegistryError, match="expected a tierd.core.registry.EventType, got Named"):
        collect_registries(pm)
    pm = make_plugin_manager(builtins=(), load_entrypoints=False)
    pm.register(Declares(EventType("stock.low", "Low."), EventType("stock.low", "Again.")), name="stock")
    with pytest.raises(RegistryError, match="already registered by 'stock'"):
        collect_registries(pm)


@pytest.mark.sqlite_only("SQLite's plan of the scan (a SQLite Database; the catalogue on PostgreSQL: its API tests)")
async def test_seen_types_are_every_type_of_the_log_found_one_seek_each(tmp_path):
    """The query the catalogue sends seeks each next type along (tenant, type, seq)
    and its newest event, never a walk of the events: a type used once, long
    ago, under many newer events is still listed, with when it was last seen."""
    db = Database(tmp_path / "t.db")
    await db.open()
    await db.migrate({"core": CORE_MIGRATIONS})
    plan = [r["detail"] for r in await db.fetchall("EXPLAIN QUERY PLAN " + SEEN_SQL, {"tenant": "acme", "most": 10})]
    assert any("events_tenant_type" in step for step in plan), plan
    assert not any("SCAN events" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    rows = [(1, "old.type", "acme"), *((i, "new.type", "acme") for i in range(2, 3000)), (3000, "x.y", "globex")]
    async with db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO events(seq, id, tenant_id, type, data, created_at) VALUES (?, ?, ?, ?, '{}', ?)",
            [(seq, f"evt_{seq}", tenant, type_, 1000.0 + seq) for seq, type_, tenant in rows],
        )
    rows = await db.fetchall(SEEN_SQL, {"tenant": "acme", "most": 10})
    assert {r["type"]: r["last_seen"] for r in rows} == {"old.type": 1001.0, "new.type": 3999.0}
    rows = await db.fetchall(SEEN_SQL, {"tenant": "acme", "most": 1})
    assert [r["type"] for r in rows] == ["new.type"]  # at most `most` types
    await db.close()
