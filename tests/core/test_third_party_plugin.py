"""A third-party plugin package is loaded through its entry point once
installed, or by name ($TIERD_PLUGINS) from its source folder; neither test
installs anything into the environment running the tests."""

import json

from conftest import example_plugin, until

from tierd.testing import install_package


def _files_of(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts)


async def test_example_plugin_is_loaded_from_its_entry_point(tierd_daemon, tmp_path):
    project = example_plugin("tierd-hello")
    before = _files_of(project)
    site = install_package(project, tmp_path / "site")  # pip install, into a folder of this test's own
    assert _files_of(project) == before  # no build/ or *.egg-info left in the example
    d = tierd_daemon(pythonpath=[site])
    token = d.create_tenant("acme")
    for type_ in ("invoice.paid", "invoice.paid", "order.created"):
        assert d.request("POST", "/v1/events", {"type": type_}, token=token)[0] == 202

    # Its consumer sees the events (asynchronously), its route answers.
    async def seen():
        status, body = await d.arequest("GET", "/v1/hello", token=token)
        assert status == 200, body
        return body["seen"] == {"invoice.paid": 2, "order.created": 1}

    await until(seen, timeout=10, what="the hello consumer to count 3 events")

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


def test_a_plugin_is_loaded_by_name_from_its_source_folder(tierd_daemon):
    d = tierd_daemon(plugins=["tierd_hello"], pythonpath=[example_plugin("tierd-hello")])
    token = d.create_tenant("acme")
    assert d.request("GET", "/v1/hello", token=token) == (200, {"tenant": "acme", "seen": {}})
    plugins = json.loads(d.cli("plugins", "--json").stdout)
    [hello] = [p for p in plugins if p["name"] == "tierd_hello"]
    assert hello["origin"] == "module" and "tierd_routes" in hello["hooks"]
    # The CLI loads it from $TIERD_PLUGINS too.
    r = d.cli("hello", "--tenant", "acme", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {}
    d.terminate()
    d.write_config(d.config | {"plugins": {"disabled": ["tierd_hello"]}})
    d.start()
    assert d.request("GET", "/v1/hello", token=token)[0] == 404
