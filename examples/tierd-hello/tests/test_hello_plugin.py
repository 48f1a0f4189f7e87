"""The hello plugin, tested as its author would: with tierd's harness
(``tierd.testing``), the plugin loaded by name from this folder, nothing
installed. Run ``pytest`` here, or tierd's ``make test``."""

import asyncio
import json

import pytest

from tierd.testing import DaemonProcess, LocalDaemon, eventually


@pytest.fixture
async def daemon(tmp_path):
    async with LocalDaemon(tmp_path, plugins=["tierd_hello"]) as d:
        yield d


async def test_counts_each_tenants_events_by_type(daemon):
    await daemon.tenant("acme")
    globex = await daemon.tenant("globex")
    for type_ in ("invoice.paid", "invoice.paid", "order.created"):
        await daemon.publish("acme", type_)
    await daemon.publish("globex", "order.created")

    async def acme_counts():
        status, body = await daemon.call("GET", "/v1/hello", tenant="acme")
        assert status == 200, body
        return body["seen"] == {"invoice.paid": 2, "order.created": 1}

    await eventually(acme_counts, timeout=10, what="acme's counts")
    await daemon.settled()  # globex's event too (it may come in a later batch than acme's)
    # Each tenant sees its own counts only.
    assert await daemon.call("GET", "/v1/hello", token=globex) == (
        200,
        {"tenant": "globex", "seen": {"order.created": 1}},
    )


async def test_a_redelivered_event_is_not_counted_twice(daemon):
    await daemon.tenant("acme")
    await daemon.publish("acme", "invoice.paid")
    await daemon.settled()
    # A crash between handling and storing the cursor hands the consumer the same events again.
    [hello] = [
        c
        for result in daemon.daemon.pm.hook.tierd_event_consumers(daemon=daemon.daemon)
        for c in result or ()
        if c.name == "hello"
    ]
    await hello.handle(await daemon.daemon.bus.list("acme", 0, 10))
    assert (await daemon.call("GET", "/v1/hello", tenant="acme"))[1]["seen"] == {"invoice.paid": 1}


async def test_its_cli_command_asks_the_running_daemon(tmp_path):
    with DaemonProcess(tmp_path, plugins=["tierd_hello"]) as d:  # `tierd run` as a subprocess
        token = d.create_tenant("acme")
        assert (await d.arequest("POST", "/v1/events", {"type": "order.created"}, token=token))[0] == 202

        def counted():
            r = d.cli("hello", "--tenant", "acme", "--json")
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout) == {"order.created": 1}

        await eventually(lambda: asyncio.to_thread(counted), timeout=10, what="`tierd hello` to count the event")


async def test_its_console_page_shows_the_tenants_counts_and_says_hello(tmp_path):
    from tierd.testing import ADMIN_TOKEN, ConsoleSession

    with DaemonProcess(tmp_path, plugins=["tierd_hello"]) as d:
        acme, globex = d.create_tenant("acme"), d.create_tenant("globex")
        assert (await d.arequest("POST", "/v1/events", {"type": "order.created"}, token=globex))[0] == 202
        async with ConsoleSession(d.url) as ui:
            await ui.sign_in(acme)
            status, html = await ui.get("/ui/hello")
            assert status == 200 and 'href="/ui/hello"' in html  # its entry in the console's navigation
            assert "order.created" not in html  # globex's event is not acme's

            status, html = await ui.post("/ui/hello", {"words": "hi there"})
            assert status == 200 and ui.last_path == "/ui/hello" and "Said hello" in html

            async def shown() -> bool:
                return (
                    '<tr data-type="hello.said"><td>hello.said</td><td class="num">1</td>'
                    in (await ui.get("/ui/hello"))[1]
                )

            await eventually(shown, timeout=10, what="the page to count the event it published")
            status, events = await d.arequest("GET", "/v1/events?type=hello.said", token=acme)
            assert [e["data"] for e in events["data"]] == [{"words": "hi there"}]

            status, html = await ui.post("/ui/hello", {"words": "forged"}, csrf=False)
            assert status == 403
        async with ConsoleSession(d.url) as ui:
            await ui.sign_in(ADMIN_TOKEN)
            status, html = await ui.get("/ui/hello")
            assert "Pick a tenant" in html
            status, html = await ui.get("/ui/hello?tenant=globex")
            assert '<tr data-type="order.created">' in html
        status, events = await d.arequest("GET", "/v1/events?type=hello.said", token=acme)
        assert len(events["data"]) == 1  # the forged post published nothing
