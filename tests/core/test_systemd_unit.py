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
