"""The shipped unit file, as systemd itself reads it (``systemd-analyze verify``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "tierd.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_has_no_unknown_or_invalid_settings(tmp_path):
    # The unit names /opt/tierd; point it at this checkout's tierd so that
    # verify can check the commands too.
    tierd = Path(sys.executable).with_name("tierd")
    unit = tmp_path / "tierd.service"
    unit.write_text(UNIT.read_text().replace("/opt/tierd/.venv/bin/tierd", str(tierd)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on a mistyped key or a bad value: it only says so.
    problems = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line or "tierd" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_postgresql_drop_in_is_valid_with_the_unit(tmp_path):
    """The README's several-nodes drop-in, read with the unit as systemd merges them."""
    tierd = Path(sys.executable).with_name("tierd")
    unit = tmp_path / "tierd.service"
    unit.write_text(UNIT.read_text().replace("/opt/tierd/.venv/bin/tierd", str(tierd)))
    drop_in = tmp_path / "tierd.service.d"
    drop_in.mkdir()
    (drop_in / "postgresql.conf").write_text((UNIT.parent / "tierd-postgresql.conf").read_text())
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "tierd" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def test_the_several_nodes_config_reads_its_secrets_from_the_credentials(tmp_path):
    """The README's node config: the URL and the admin token come from
    $CREDENTIALS_DIRECTORY, and check-config never prints them."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "db-url").write_text("postgresql://tierd:s3cret-pw@db.example/tierd")
    (creds / "admin-token").write_text("a" * 40)
    config = tmp_path / "tierd.yaml"
    config.write_text(
        "server:\n  admin_token: ${file:${CREDENTIALS_DIRECTORY}/admin-token}\n"
        f"storage:\n  path: {tmp_path / 'tierd.db'}\n  url: ${{file:${{CREDENTIALS_DIRECTORY}}/db-url}}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(creds)}
    tierd = str(Path(sys.executable).with_name("tierd"))
    result = subprocess.run([tierd, "--config", str(config), "check-config"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr and "a" * 40 not in result.stdout + result.stderr
    # Without the credential (the drop-in not installed) the file is named, not a traceback.
    (creds / "db-url").unlink()
    result = subprocess.run([tierd, "--config", str(config), "check-config"], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "db-url" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
