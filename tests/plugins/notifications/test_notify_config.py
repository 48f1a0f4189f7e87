"""The notifications section through core's loader: the example file, errors
with file and line, and check-config catching template syntax errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tierd.core.config import ConfigError, load_config
from tierd.plugins.notifications import tierd_config_schema
from tierd.plugins.notifications.channels import BUILTIN

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "tierd" / "plugins" / "notifications" / "config.example.yaml"
ENV = {
    "SMTP_PASSWORD": "pw",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
    "TEAMS_WEBHOOK_URL": "https://example.webhook.office.com/x",
    "ERP_TOKEN": "t",
}


class Regs:
    channels = {c.type_name: c for c in BUILTIN}


def schemas():
    return tierd_config_schema(Regs)


def test_example_config_is_valid_and_interpolated():
    config = load_config(EXAMPLE, schemas(), env=ENV)
    section = config["notifications"]
    assert section["channels"]["ops-mail"]["password"] == "pw"
    assert section["channels"]["team-chat"]["url"] == ENV["SLACK_WEBHOOK_URL"]
    assert section["routes"][0]["group_wait"] == 30.0
    assert section["retry"] == {"max_attempts": 8, "backoff": 10.0, "max_backoff": 3600.0}


def test_defaults_when_absent(tmp_path):
    path = tmp_path / "tierd.yaml"
    path.write_text("logging: {level: INFO}\n")
    section = load_config(path, schemas(), env={})["notifications"]
    # As config/tierd.yaml says: the daemon's own alerts go to its log out of the box.
    assert section["channels"] == {"journal": {"type": "log"}} and section["routes"] == []
    assert section["operator_alerts"] == "journal"


def test_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "tierd.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "notifications": {
                    "channels": {"chat": {"type": "slak", "url": "x"}, "hook": {"type": "webhook", "url": "ftp://x"}},
                    "routes": [{"match": {"type": "a.*"}, "channels": ["hook"], "body": "{% if %}"}],
                }
            },
            sort_keys=False,
        )
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, schemas(), env={})
    text = str(info.value)
    assert f"{path}:" in text
    assert "notifications.channels.chat.type: unknown channel type 'slak'" in text
    assert "notifications.channels.hook.url: invalid URL 'ftp://x'" in text
    assert "notifications.routes[0].body: template syntax error" in text


def test_check_config_reports_template_syntax_error(tmp_path):
    path = tmp_path / "tierd.yaml"
    path.write_text("notifications:\n  channels:\n    j: {type: log, subject: '{{ data.amount'}\n")
    out = subprocess.run(
        [sys.executable, "-m", "tierd", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "notifications.channels.j.subject: template syntax error on line 1" in out.stdout + out.stderr


def test_routes_test_works_offline(tmp_path):
    """`tierd notify routes test` needs only the config file, no running daemon."""
    path = tmp_path / "tierd.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"listen": "127.0.0.1:1"},  # nothing listens there
                "notifications": {
                    "channels": {"mail": {"type": "log"}, "chat": {"type": "log"}},
                    "time_intervals": {"always": {"weekdays": ["monday:sunday"]}},
                    "routes": [
                        {
                            "name": "big",
                            "match": {"type": "invoice.*", "data": {"amount": {"gt": 1000}}},
                            "channels": ["mail"],
                            "group_by": ["type"],
                            "group_wait": "30s",
                            "routes": [
                                {
                                    "name": "eur",
                                    "match": {"data": {"currency": "EUR"}},
                                    "channels": ["chat"],
                                    "mute_time_intervals": ["always"],
                                }
                            ],
                        }
                    ],
                },
            }
        )
    )
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"type": "invoice.paid", "tenant": "acme", "data": {"amount": 5000, "currency": "EUR"}})
    )

    def run(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tierd",
                "--config",
                str(path),
                "notify",
                "routes",
                "test",
                "--event",
                str(event),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = run()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        'route eur (big > eur) -> chat  grouped by {"type": "invoice.paid"}, '
        "first digest after 30s  MUTED now (mute_time_interval always)"
    )
    result = json.loads(run("--json").stdout)
    assert result["routes"][0]["route"] == "eur" and result["routes"][0]["channels"] == ["chat"]
    event.write_text(json.dumps({"type": "invoice.paid", "data": {"amount": 5}}))
    assert "no route matches" in run().stdout
