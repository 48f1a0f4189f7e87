"""What an operator meets at the command line and in the log: a config mistake that
does not lock out the running daemon, the access log, the bundled config, clear
failures (taken port, missing backup folder, API errors printed once)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ADMIN_TOKEN, ROOT, DaemonProcess

from tierd.core.config import load_config
from tierd.core.daemon import plugin_schemas
from tierd.core.plugins import make_plugin_manager
from tierd.core.registry import collect_registries

BUNDLED = ROOT / "config" / "tierd.yaml"


def tierd(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tierd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy() | (env or {}),
    )


def wait_for_log(daemon: DaemonProcess, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = daemon.logs()
        if text in logs:
            return logs
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the daemon's log:\n{daemon.logs()}")


def break_config(daemon: DaemonProcess, **sections) -> None:
    """Write the daemon's config file with these sections changed (an error on purpose)."""
    daemon.write_config(daemon.config | sections)


def schemas():
    pm = make_plugin_manager(load_entrypoints=False)
    return plugin_schemas(pm, collect_registries(pm))


# --- 1. a config mistake does not lock the operator out of the running daemon ---------------


def test_daemon_commands_work_while_the_file_has_an_error_and_reload_prints_the_refusal(tierd_daemon):
    d = tierd_daemon()
    d.create_tenant("acme")
    break_config(d, logging={"level": "LOUD"}, webhooks={"timout": "5s"})

    reload = d.cli("reload")
    assert reload.returncode == 1
    assert reload.stderr.startswith("Error: config_invalid: the new configuration was refused")
    assert f"{d.config_path}:" in reload.stderr and "logging.level:" in reload.stderr
    assert "webhooks.timout: unknown key 'timout' (did you mean 'timeout'?)" in reload.stderr
    assert not reload.stderr.endswith("\n\n")
    wait_for_log(d, "reload refused")
    assert "logging.level" in d.logs()

    # Commands that only talk to the daemon need only its address and token.
    published = d.cli("events", "publish", "--tenant", "acme", "--type", "invoice.paid", "--json")
    assert published.returncode == 0, published.stderr
    assert "invoice.paid" in d.cli("events", "list", "--tenant", "acme").stdout
    channels = d.cli("notify", "channels")
    assert channels.returncode == 0 and "journal" in channels.stdout
    assert d.cli("webhooks", "list", "--tenant", "acme").returncode == 0
    assert d.cli("recon", "accounts", "--tenant", "acme").returncode == 0

    # Commands that open the database need the whole file, and say which errors stop them.
    tenants = d.cli("tenants", "list")
    assert tenants.returncode == 1
    assert "invalid configuration" in tenants.stderr and "still work" in tenants.stderr
    assert "logging.level: expected one of" in tenants.stderr

    d.write_config(d.config)
    fixed = d.cli("reload")
    assert (fixed.returncode, fixed.stdout) == (0, "configuration reloaded\n")


def test_the_admin_token_kept_beside_the_database_is_found_while_the_file_has_an_error(tierd_daemon):
    d = tierd_daemon({"server": {"admin_token": None}})
    assert (d.workdir / "admin.token").exists()
    break_config(d, notifications={"routes": "not a list"})
    reload = d.cli("reload")
    assert reload.returncode == 1 and "config_invalid" in reload.stderr, reload.stderr
    assert "notifications.routes" in reload.stderr


def test_url_and_admin_token_from_the_environment_reach_the_daemon_when_server_is_broken(tierd_daemon):
    d = tierd_daemon()
    break_config(d, server=d.config["server"] | {"listen": "nowhere"})

    lost = d.cli("reload")
    assert lost.returncode == 1
    assert "cannot tell where the running daemon is" in lost.stderr and "server.listen" in lost.stderr
    assert "--url" in lost.stderr

    env = {"TIERD_ADMIN_TOKEN": ADMIN_TOKEN}
    for args, extra in (((f"--url={d.url}",), {}), ((), {"TIERD_URL": d.url})):
        reached = subprocess.run(
            [sys.executable, "-m", "tierd", "--config", str(d.config_path), *args, "reload"],
            cwd=d.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy() | env | extra,
        )
        assert reached.returncode == 1
        assert "config_invalid" in reached.stderr and "server.listen" in reached.stderr

    wrong_token = d.cli(f"--url={d.url}", "events", "list", env={"TIERD_ADMIN_TOKEN": "nope-" + ADMIN_TOKEN})
    assert wrong_token.returncode == 1 and "unauthorized" in wrong_token.stderr
    bad_url = d.cli("--url=https://127.0.0.1:1", "events", "list", env=env)
    assert bad_url.returncode == 2 and "plain http://" in bad_url.stderr


# --- 2. access log and --log-level ------------------------------------------------------------


def test_access_log_is_off_by_default_and_never_shows_secrets(tierd_daemon):
    d = tierd_daemon()
    status, _ = d.request("GET", "/v1/events?limit=3")
    assert status == 200
    d.cli("reload")  # a later line in the log: the request above had its chance to be logged
    wait_for_log(d, "configuration reloaded")
    assert "/v1/events" not in d.logs()

    d.config["logging"]["access_log"] = True
    d.write_config(d.config)
    assert d.cli("reload").returncode == 0
    status, _ = d.request("GET", "/v1/events?limit=2&token=sekrit-query-value&cursor=")
    assert status in (200, 400)
    logs = wait_for_log(d, "GET /v1/events?limit=2&token=***")
    line = next(line for line in logs.splitlines() if "GET /v1/events?limit=2" in line)
    assert "tierd.access" in line and f" {status} " in line and line.endswith("ms")
    assert "sekrit-query-value" not in logs
    assert ADMIN_TOKEN not in logs and "Bearer" not in logs


def test_run_log_level_overrides_the_configuration(tierd_daemon):
    d = tierd_daemon({"logging": {"level": "WARNING"}}, start=False)
    env = os.environ.copy() | {"NOTIFY_SOCKET": str(d.notify.path), "PYTHONUNBUFFERED": "1"}
    d._log = open(d.log_path, "ab")
    d._notify_start = len(d.notify.drain())
    d.proc = subprocess.Popen(
        [sys.executable, "-m", "tierd", "--config", str(d.config_path), "run", "--log-level", "debug"],
        cwd=d.workdir,
        env=env,
        stdout=d._log,
        stderr=subprocess.STDOUT,
    )
    d.wait_ready()
    logs = wait_for_log(d, "ready on")  # an INFO line, which logging.level: WARNING would hide
    assert " DEBUG " in logs
    assert "aiosqlite" not in logs  # its two lines per query would drown the rest


# --- 3. the bundled configuration ---------------------------------------------------------------


def test_built_in_defaults_are_the_bundled_file():
    defaults = load_config(None, schemas(), env={})
    bundled = load_config(BUNDLED, schemas(), env={})
    # admin_token: ${TIERD_ADMIN_TOKEN:-} is "" in the file, None by default: both mean unset.
    for config in (defaults, bundled):
        config["server"]["admin_token"] = config["server"]["admin_token"] or None
    assert dict(defaults) == dict(bundled)
    assert defaults["notifications"]["operator_alerts"] == "journal"


def test_operator_alerts_default_to_journal_only_when_there_is_one(tmp_path):
    path = tmp_path / "tierd.yaml"
    path.write_text("notifications:\n  channels:\n    chat: {type: log}\n")
    section = load_config(path, schemas(), env={})["notifications"]
    assert section["channels"] == {"chat": {"type": "log"}} and section["operator_alerts"] is None
    path.write_text("notifications:\n  operator_alerts: []\n")
    assert load_config(path, schemas(), env={})["notifications"]["operator_alerts"] == []


def test_the_readme_check_config_example_is_what_the_bundled_file_gives(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\n  ```\n(  config/tierd\.yaml:.*?)  ```\n", readme, re.S).group(1)
    expected = "".join(line.removeprefix("  ") + "\n" for line in block.splitlines())
    text = BUNDLED.read_text()
    mistakes = [
        ('retry_schedule: ["0s", "5s", "5m"', 'retry_schedule: ["0s", "5s", "5x"'),
        ("\n  timeout: 15s\n", "\n  timout: 15s\n"),
    ]
    for right, wrong in mistakes:
        assert text.count(right) == 1
        text = text.replace(right, wrong)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "tierd.yaml").write_text(text)
    checked = tierd("check-config", cwd=tmp_path, env={"TIERD_ADMIN_TOKEN": ""})
    assert (checked.returncode, checked.stderr) == (1, expected)


def test_config_sample_prints_and_writes_the_bundled_file_which_checks_ok(tmp_path):
    printed = tierd("config", "sample", cwd=tmp_path)
    assert printed.returncode == 0 and printed.stdout == BUNDLED.read_text()

    target = tmp_path / "etc" / "tierd.yaml"
    missing = tierd("config", "sample", str(target), cwd=tmp_path)
    assert missing.returncode == 1 and "no such directory" in missing.stderr
    assert not target.parent.exists()

    target.parent.mkdir()
    written = tierd("config", "sample", str(target), cwd=tmp_path)
    assert written.returncode == 0 and target.read_text() == BUNDLED.read_text()
    checked = tierd("--config", str(target), "check-config", cwd=tmp_path, env={"TIERD_ADMIN_TOKEN": ""})
    assert (checked.returncode, checked.stdout) == (0, f"{target}: OK\n"), checked.stderr
    # A daemon-free offline check of what the defaults promise: the daemon's alerts reach its log.
    event = tmp_path / "event.json"
    event.write_text('{"type": "webhook.endpoint.disabled", "tenant": "acme"}')
    routed = tierd("--config", str(target), "notify", "routes", "test", "--event", str(event), cwd=tmp_path)
    assert "route operator_alerts" in routed.stdout and "-> journal" in routed.stdout

    target.write_text("# mine\n")
    refused = tierd("config", "sample", str(target), cwd=tmp_path)
    assert refused.returncode == 1 and "--force" in refused.stderr and target.read_text() == "# mine\n"
    forced = tierd("config", "sample", str(target), "--force", cwd=tmp_path)
    assert forced.returncode == 0 and target.read_text() == BUNDLED.read_text()


def test_the_wheel_ships_the_bundled_config(tmp_path):
    """`pip install tierd` users get `tierd config sample` too: the wheel holds a real copy."""
    source = tmp_path / "src"
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for folder in ("tierd", "config"):
        shutil.copytree(ROOT / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("tierd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("tierd/tierd.yaml").decode() == BUNDLED.read_text()


# --- 4. clear failures --------------------------------------------------------------------------


def test_run_on_a_taken_port_fails_before_creating_anything(tierd_daemon, tmp_path):
    running = tierd_daemon()
    second = tmp_path / "second"
    second.mkdir()
    (second / "tierd.yaml").write_text(
        yaml.safe_dump({"server": {"listen": f"127.0.0.1:{running.port}"}, "storage": {"path": "./var/tierd.db"}})
    )
    result = tierd("--config", "tierd.yaml", "run", cwd=second)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{running.port}: Address already in use" in result.stderr
    assert sorted(p.name for p in second.iterdir()) == ["tierd.yaml"]  # no var/, no database, no admin.token


@pytest.mark.sqlite_only("`tierd db backup` writes a SQLite file (on PostgreSQL it names pg_dump: test_daemon_pg.py)")
def test_db_backup_into_a_missing_directory_fails_and_creates_nothing(tierd_daemon, tmp_path):
    d = tierd_daemon()
    target = tmp_path / "backups" / "nightly" / "tierd.db"
    result = d.cli("db", "backup", str(target))
    assert result.returncode == 1
    assert result.stderr == f"Error: {target.parent}: no such directory\n"
    assert not (tmp_path / "backups").exists()
    target.parent.mkdir(parents=True)
    assert d.cli("db", "backup", str(target)).returncode == 0 and target.stat().st_size > 0


def test_an_api_error_is_printed_once_and_ends_without_a_blank_line(tierd_daemon):
    d = tierd_daemon()
    d.create_tenant("acme")
    refused = d.cli("webhooks", "add", "--tenant", "acme", "https://10.0.0.1/hook")
    assert refused.returncode == 1
    assert refused.stderr.count("10.0.0.1 is private") == 1, refused.stderr
    assert refused.stderr.startswith("Error: ") and refused.stderr.endswith(")\n")
    several = d.cli("webhooks", "add", "--tenant", "acme", "https://10.0.0.1/hook", "--rate-limit", "-1")
    assert several.returncode == 1 and several.stderr.count("10.0.0.1 is private") == 1, several.stderr
    assert "rate_limit" in several.stderr and not several.stderr.endswith("\n\n")


def test_help_names_only_what_exists(tmp_path):
    shown = tierd("--help", cwd=tmp_path)
    assert shown.returncode == 0 and "reports" in shown.stdout
    assert "--url" in shown.stdout and "config" in shown.stdout
