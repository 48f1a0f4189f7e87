"""Example tierd plugin: counts events per tenant and type, and shows them
(in the API, the CLI and a page of the web console)."""

from pathlib import Path

import click

from tierd.core.api import Route, json_response, require_tenant
from tierd.core.cli_helpers import json_option, pass_cli
from tierd.core.events import Consumer
from tierd.core.plugins import hookimpl
from tierd.core.ui import UiApiError, UiPage, UiSection

#: Plain SQL that both backends take; a plugin whose SQL differs gives each
#: backend its own list, numbered alike.
HELLO_SEEN = """
    CREATE TABLE hello_seen (
        tenant_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        PRIMARY KEY (tenant_id, event_id)
    );
"""


@hookimpl
def tierd_migrations():
    return {"hello": {"sqlite": [HELLO_SEEN], "postgresql": [HELLO_SEEN]}}


@hookimpl
def tierd_event_consumers(daemon):
    async def handle(events):
        # ON CONFLICT DO NOTHING: a re-delivered event is not counted twice.
        async with daemon.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO hello_seen(tenant_id, event_id, type) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                [(e.tenant, e.id, e.type) for e in events],
            )

    return [Consumer("hello", handle)]


@hookimpl
def tierd_routes(daemon):
    async def hello(request):
        tenant = require_tenant(request)
        rows = await daemon.db.fetchall(
            "SELECT type, COUNT(*) AS n FROM hello_seen WHERE tenant_id=? GROUP BY type ORDER BY type", (tenant,)
        )
        return json_response({"tenant": tenant, "seen": {r["type"]: r["n"] for r in rows}})

    return [Route("GET", "/v1/hello", hello, summary="Events seen by the hello plugin")]


@hookimpl
def tierd_cli(cli):
    @cli.command("hello")
    @click.option("--tenant", required=True)
    @json_option
    @pass_cli
    def hello(cli_ctx, tenant, as_json):
        """Show how many events of each type the hello plugin saw."""
        cli_ctx.output(cli_ctx.api.get("/v1/hello", tenant=tenant)["seen"], as_json=as_json)


@hookimpl
def tierd_ui(daemon):
    async def page(ctx):
        # Through the API, as the signed-in caller: a tenant sees its own counts only.
        counts = await ctx.api("GET", "/v1/hello") if ctx.tenant else None
        return ctx.render("hello/hello.html", counts=counts)

    async def say_hello(ctx):
        # Core has checked the form's CSRF token; the event goes through the API's validation.
        words = (await ctx.form()).get("words", "")
        try:
            await ctx.api("POST", "/v1/events", body={"type": "hello.said", "data": {"words": words}})
        except UiApiError as exc:
            return ctx.redirect("/hello", error=exc.message)
        return ctx.redirect("/hello", flash="Said hello")

    return UiSection(
        "hello",
        Path(__file__).parent / "templates",
        pages=[UiPage("GET", "/hello", page), UiPage("POST", "/hello", say_hello)],
        nav=[("Hello", "/hello")],
    )
