"""The hook API contract: documented hooks, loud failures, registries."""

import inspect

import pytest
from pluggy import PluginValidationError

from tierd.core import hookspecs
from tierd.core.plugins import hookimpl, make_plugin_manager
from tierd.core.registry import Channel, RegistryError, collect_registries


def test_every_hookspec_has_a_docstring_and_a_tierd_name():
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("tierd_")]
    assert len(specs) >= 13
    for spec in specs:
        assert spec.__doc__ and len(spec.__doc__.strip()) > 40, f"{spec.__name__} needs a docstring"


def test_a_misspelt_hookimpl_fails_loudly(tmp_path, monkeypatch):
    # The factory itself must refuse it: that is where a third-party plugin is
    # loaded, whether from its entry point or by name as here.
    (tmp_path / "typo_plugin.py").write_text(
        "from tierd.core.plugins import hookimpl\n\n@hookimpl\ndef tierd_rouets(daemon):\n    return []\n"
    )
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setenv("TIERD_PLUGINS", "typo_plugin")
    with pytest.raises(PluginValidationError, match="tierd_rouets"):
        make_plugin_manager(builtins=())
    # The same plugin, spelt right, loads.
    (tmp_path / "fine_plugin.py").write_text(
        "from tierd.core.plugins import hookimpl\n\n@hookimpl\ndef tierd_routes(daemon):\n    return []\n"
    )
    monkeypatch.setenv("TIERD_PLUGINS", "fine_plugin")
    assert make_plugin_manager(builtins=()).has_plugin("fine_plugin")


def test_registries_reject_duplicates_and_nameless_entries():
    class Mail(Channel):
        type_name = "email"

    class Again:
        @hookimpl
        def tierd_register_channels(self, register):
            register(Mail)

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Again(), name="again")
    with pytest.raises(RegistryError, match="already registered"):
        collect_registries(pm)

    class Nameless:
        @hookimpl
        def tierd_register_statement_importers(self, register):
            register(object())

    pm = make_plugin_manager(builtins=(), load_entrypoints=False)
    pm.register(Nameless(), name="nameless")
    with pytest.raises(RegistryError, match="without format_name"):
        collect_registries(pm)


def test_builtins_register_their_registries():
    regs = collect_registries(make_plugin_manager(load_entrypoints=False))
    assert {"email", "slack", "teams", "ntfy", "webhook", "log"} <= set(regs.channels)
    assert {"camt053", "mt940", "ofx", "csv"} <= set(regs.statement_importers)
