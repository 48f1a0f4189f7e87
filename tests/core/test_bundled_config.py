"""The configuration file shipped in config/ is valid and documents every key."""

import re
from pathlib import Path

from tierd.core.config import load_config
from tierd.core.daemon import plugin_schemas
from tierd.core.plugins import make_plugin_manager
from tierd.core.registry import collect_registries
from tierd.core.schema import describe

BUNDLED = Path(__file__).resolve().parents[2] / "config" / "tierd.yaml"


def test_bundled_config_is_valid_without_any_environment():
    pm = make_plugin_manager(load_entrypoints=False)
    config = load_config(BUNDLED, plugin_schemas(pm, collect_registries(pm)), env={})
    assert config["server"]["listen"] == "127.0.0.1:8765"
    assert config["storage"]["path"] == "./var/tierd.db"


def test_every_core_and_webhooks_key_is_in_the_bundled_file():
    """An admin reads config/tierd.yaml and finds every key (commented or set)."""
    text = BUNDLED.read_text()
    pm = make_plugin_manager(load_entrypoints=False)
    schemas = plugin_schemas(pm, collect_registries(pm))
    from tierd.core.config import CORE_SCHEMAS

    for section, schema in [*CORE_SCHEMAS.items(), ("webhooks", schemas["webhooks"])]:
        for path, *_ in describe(schema):
            key = path.split(".")[-1].rstrip("[]")
            if "<" in key or not key:
                continue
            assert re.search(rf"^\s*#?\s*{re.escape(key)}:", text, re.M), f"{section}.{path} is not documented"
