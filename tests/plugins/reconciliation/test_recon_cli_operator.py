"""The README's reconciliation walk-through, run as written: its `sed` on the bundled
config, then every `$ tierd recon ...` line of its console block, each output compared
with the README's (ids abbreviated there are bound to the real ones as they appear;
AGE_DAYS depends on today, so only its being a number is compared)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

README = (ROOT / "README.md").read_text()
PLACEHOLDER = re.compile(r"\A([a-z]+)_01a2…[0-9a-f]{2}\Z")  # m_01a2…c7 in the README
REAL_ID = re.compile(r"\A[a-z]+_[0-9a-f]{28}\Z")


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def transcript() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of the reconciliation console block."""
    block = re.search(r"```console\n(.*?)```", section("Bank reconciliation"), re.S).group(1)
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def compare(expected: list[str], actual: list[str], ids: dict[str, str]) -> None:
    """Line by line, token by token; binds the README's abbreviated ids to real ones."""
    assert len(actual) == len(expected), "\n".join(["expected:", *expected, "got:", *actual])
    age_column = None
    for want, got in zip(expected, actual, strict=True):
        want_tokens, got_tokens = want.split(), got.split()
        if "AGE_DAYS" in want_tokens:
            age_column = want_tokens.index("AGE_DAYS")
        elif want.endswith(":"):
            age_column = None  # "Ledger entries:" starts another table
        assert len(got_tokens) == len(want_tokens), f"expected {want!r}, got {got!r}"
        for index, (w, g) in enumerate(zip(want_tokens, got_tokens, strict=True)):
            w, g = w.rstrip(",;"), g.rstrip(",;")
            if PLACEHOLDER.match(w) and REAL_ID.match(g):
                assert ids.setdefault(w, g) == g, f"{w} stands for {ids[w]}, not {g}"
            elif age_column is not None and index == age_column and w.isdigit():
                assert g.isdigit(), f"AGE_DAYS {g!r} in {got!r}"
            else:
                assert g == w, f"expected {want!r}, got {got!r}"


def test_the_readme_reconciliation_walk_through_behaves_as_written(tierd_daemon):
    d = tierd_daemon(start=False)
    (d.workdir / "examples").symlink_to(ROOT / "examples")
    (d.workdir / "config").mkdir()
    d.config_path = d.workdir / "config" / "tierd.yaml"
    d.config_path.write_text(
        (ROOT / "config" / "tierd.yaml").read_text().replace("listen: 127.0.0.1:8765", f"listen: 127.0.0.1:{d.port}")
    )
    setup = re.search(r"```sh\n(sed .*?)\ntierd check-config", section("Bank reconciliation"), re.S).group(1)
    subprocess.run(["bash", "-c", setup], cwd=d.workdir, check=True)
    d.start()

    def tierd(*args: str) -> subprocess.CompletedProcess:  # found by cwd: ./config/tierd.yaml, ./var/admin.token
        return subprocess.run(
            [sys.executable, "-m", "tierd", *args],
            cwd=d.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy() | {"TIERD_ADMIN_TOKEN": ""},
        )

    variables, ids = {}, {}
    for command, expected in transcript():
        if re.fullmatch(r"[A-Z]+=\S+", command):
            name, _, value = command.partition("=")
            variables[name] = value
            continue
        for name, value in variables.items():
            command = command.replace(f"${name}", value)
        for placeholder, real in ids.items():
            command = command.replace(placeholder, real)
        quoted = re.findall(r'"([^"]*)"', command)  # --note "rest booked as advance"
        args = re.sub(r'"[^"]*"', "\0", command).split()
        args = [quoted.pop(0) if a == "\0" else a for a in args]
        assert args[0] == "tierd"
        result = tierd(*args[1:])
        failed = expected and expected[0].startswith("Error: ")
        assert result.returncode == (1 if failed else 0), (command, result.stderr)
        compare(expected, (result.stderr if failed else result.stdout).splitlines(), ids)
