"""A third-party plugin package, pip-installed, is loaded through its entry point."""

import json
import time

from conftest import install_example


def test_example_plugin_is_loaded_from_its_entry_point(tierd_daemon):
    install_example("tierd-hello", "tierd_hello")
    d = tierd_daemon()
    token = d.create_tenant("acme")
    for type_ in ("invoice.paid", "invoice.paid", "order.created"):
        assert d.request("POST", "/v1/events", {"type": type_}, token=token)[0] == 202

    # Its consumer sees the events (asynchronously), its route answers.
    deadline = time.monotonic() + 10
    while True:
        status, body = d.request("GET", "/v1/hello", token=token)
        assert status == 200, body
        if body["seen"] == {"invoice.paid": 2, "order.created": 1} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert body["seen"] == {"invoice.paid": 2, "order.created": 1}

    plugins = json.loads(d.cli("plugins", "--json").stdout)
    hello = next(p for p in plugins if p["name"] == "hello")
    assert hello["origin"] == "entry point (tierd-hello)" and hello["version"] == "0.2.0"
    assert {"tierd_routes", "tierd_event_consumers", "tierd_migrations", "tierd_cli"} <= set(hello["hooks"])

    # Its CLI command is part of `tierd`.
    r = d.cli("hello", "--tenant", "acme", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"invoice.paid": 2, "order.created": 1}

    # And it can be disabled from the config like any built-in.
    d.terminate()
    d.write_config(d.config | {"plugins": {"disabled": ["hello"]}})
    d.start()
    assert d.request("GET", "/v1/hello", token=token)[0] == 404
