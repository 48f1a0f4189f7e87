"""The ``webhooks:`` config section: defaults, the documented example, errors."""

from pathlib import Path

import pytest
import yaml

from tierd.core.config import ConfigError
from tierd.core.daemon import prepare

EXAMPLE = Path(__file__).resolve().parents[3] / "tierd" / "plugins" / "webhooks" / "config.example.yaml"


def load(tmp_path, text: str):
    path = tmp_path / "tierd.yaml"
    path.write_text(text)
    return prepare(path)[2]


def test_defaults(tmp_path):
    section = load(tmp_path, "{}\n")["webhooks"]
    assert section["retry_schedule"] == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    assert section["timeout"] == 15
    assert section["disable_after"] == 5 * 86400 and section["retention"] == 30 * 86400
    assert section["rotation_grace"] == 24 * 3600
    assert section["allow_http"] is False and section["allow_destinations"] == []
    assert section["max_in_flight"] >= section["endpoint_max_in_flight"] >= 1


def test_documented_example_is_valid_and_matches_defaults(tmp_path):
    example = load(tmp_path, EXAMPLE.read_text())["webhooks"]
    assert example == load(tmp_path, "{}\n")["webhooks"]
    # every key of the schema is documented in the example
    from tierd.plugins.webhooks.config import SCHEMA

    assert set(yaml.safe_load(EXAMPLE.read_text())["webhooks"]) == set(SCHEMA.fields)


def test_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(
            tmp_path,
            "webhooks:\n  retry_schedule: ['0s', 'soon']\n  allow_destinations: ['10.0.0.0/33']\n  timout: 5s\n",
        )
    text = str(info.value)
    assert "webhooks.retry_schedule[1]" in text and "invalid duration" in text
    assert "webhooks.allow_destinations[0]" in text
    assert "timout" in text and "timeout" in text  # did you mean


def test_endpoint_cap_cannot_exceed_global_cap(tmp_path):
    with pytest.raises(ConfigError, match="endpoint_max_in_flight"):
        load(tmp_path, "webhooks:\n  max_in_flight: 5\n  endpoint_max_in_flight: 10\n")


def test_ca_file_must_hold_certificates(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"webhooks:\n  ca_file: {tmp_path / 'missing.pem'}\n")
    assert "tierd.yaml:2: webhooks.ca_file: cannot read CA certificates" in str(info.value)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="webhooks.ca_file: .* holds no readable PEM certificate"):
        load(tmp_path, f"webhooks:\n  ca_file: {tmp_path / 'junk.pem'}\n")
