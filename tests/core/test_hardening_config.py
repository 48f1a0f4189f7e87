"""A hostile or broken configuration is refused clearly and never hurts the daemon (issue 10).

Alias bombs, huge and deeply nested files, values that are not valid Unicode
or are absurd numbers, and secrets read through ``${...}`` that must never
appear in an error: through ``load_config``, ``tierd check-config`` and a
running daemon asked to reload.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml
from test_core_config import write

from tierd.core.config import (
    MAX_ALIAS_EXPANSIONS,
    MAX_DEPTH,
    MAX_FILE_SIZE,
    MAX_INTERPOLATED,
    ConfigError,
    load_config,
)
from tierd.core.schema import (
    Any,
    Bool,
    CaFile,
    Cidr,
    Cron,
    Decimal,
    Duration,
    Enum,
    Float,
    Int,
    List,
    Map,
    Obj,
    OneOf,
    Str,
    TimeZone,
    Url,
    validate,
)

PLUGINS = {"x": Obj({}, extra=True)}


def errors_of(path, schemas=PLUGINS, env=None):
    with pytest.raises(ConfigError) as info:
        load_config(path, schemas, env=env or {})
    return info.value.errors


def check_config(path, *options, env=None, timeout=30):
    """``tierd check-config`` as an admin runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tierd", "--config", str(path), "check-config", *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy() | (env or {}),
    )


def alias_bomb(levels=10) -> str:
    """The "billion laughs": 9 ** levels strings from a file of less than 1 KB."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# --- alias bombs, size and depth ----------------------------------------------------


def test_check_config_refuses_an_alias_bomb_quickly(tmp_path):
    path = write(tmp_path, alias_bomb())
    assert path.stat().st_size < 1024
    # It used to run 24 s into a MemoryError; the timeout fails the test if it still expands.
    result = check_config(path, timeout=20)
    assert result.returncode == 1
    # lol5 is the first list whose aliases expand past the limit (9**6 strings).
    assert result.stderr.splitlines() == [
        f"{path}:6: lol5: too many alias expansions (limit {MAX_ALIAS_EXPANSIONS})",
        "1 error(s)",
    ]

    result = check_config(path, "--json", timeout=20)
    assert result.returncode == 1
    assert json.loads(result.stdout)["errors"] == [
        f"{path}:6: lol5: too many alias expansions (limit {MAX_ALIAS_EXPANSIONS})"
    ]


def test_a_bomb_through_a_merge_key_is_refused(tmp_path):
    # m1..m3 build 67,257 values through aliases, under the limit; merging m3 once more passes it.
    lines = ["x:", "  m0: &m0 {" + ", ".join(f"k{i}: [1, 2, 3, 4, 5, 6, 7, 8]" for i in range(9)) + "}"]
    for i in range(1, 4):
        lines.append(f"  m{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(9)) + "}")
    lines.append("  merged:\n    <<: *m3")
    path = write(tmp_path, "\n".join(lines) + "\n")
    # Its fifth merged key (k4, written on m3's line 5) passes the limit.
    assert errors_of(path) == [f"{path}:5: x.merged.k4: too many alias expansions (limit {MAX_ALIAS_EXPANSIONS})"]
    path.write_text("\n".join(lines[:-1]) + "\n")  # without the merge: fine
    assert len(load_config(path, PLUGINS, env={})["x"]["m3"]["k8"]["k8"]["k8"]["k8"]) == 8


def test_ordinary_anchors_aliases_and_merge_keys_still_work(tmp_path):
    # 50 uses of a 200-item list and of a mapping: 10,000 values built through aliases, far below the limit.
    hosts = ", ".join(f"h{i}.example" for i in range(200))
    uses = "\n".join(f"  copy{i}: {{hosts: *hosts, <<: *base}}" for i in range(50))
    path = write(tmp_path, f"x:\n  hosts: &hosts [{hosts}]\n  base: &base {{retries: 3, tls: true}}\n{uses}\n")
    x = load_config(path, PLUGINS, env={})["x"]
    assert x["copy49"]["hosts"][199] == "h199.example" and x["copy49"]["retries"] == 3
    # Every copy is a value of its own: changing one changes no other.
    x["copy0"]["hosts"].append("extra")
    assert len(x["copy1"]["hosts"]) == 200


def test_file_over_the_size_limit_names_the_file_and_its_size(tmp_path):
    path = tmp_path / "tierd.yaml"
    path.write_text("x: {}\n" + "#" * MAX_FILE_SIZE + "\n")
    size = path.stat().st_size
    assert errors_of(path) == [
        f"{path}: configuration file too large: {size} bytes (the limit is {MAX_FILE_SIZE} bytes)"
    ]
    result = check_config(path)
    assert result.returncode == 1 and f"{path}: configuration file too large: {size} bytes" in result.stderr

    # Exactly at the limit is fine.
    path.write_text("x: {a: 1}\n#" + "#" * (MAX_FILE_SIZE - 12) + "\n")
    assert path.stat().st_size == MAX_FILE_SIZE
    assert load_config(path, PLUGINS, env={})["x"] == {"a": 1}


def test_deep_nesting_is_an_error_at_its_line_not_a_crash(tmp_path):
    path = write(tmp_path, "storage: {}\nx:\n  deep: " + "[" * 5000 + "]" * 5000 + "\n")
    result = check_config(path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}:3:{9 + MAX_DEPTH - 2}: nested deeper than {MAX_DEPTH} levels\n")

    # Aliases can stack shallow lists into a deep value: refused as well.
    lines = ["x:", "  l0: &l0 [" + "[" * 60 + "]" * 60 + "]"]
    lines += [f"  l{i}: &l{i} [" + "[" * 60 + f"*l{i - 1}" + "]" * 60 + "]" for i in range(1, 4)]
    (error,) = errors_of(write(tmp_path, "\n".join(lines) + "\n"))
    assert f"nested deeper than {MAX_DEPTH} levels" in error

    # Nesting within the limit is fine.
    path = write(tmp_path, "x:\n  deep: " + "[" * 50 + "]" * 50 + "\n")
    deep = load_config(path, PLUGINS, env={})["x"]["deep"]
    for _ in range(49):
        (deep,) = deep
    assert deep == []


def test_interpolation_cannot_blow_up_the_configuration(tmp_path):
    # 200 references to a 100 KB variable in one value: 20 MB from a file of 2 KB.
    path = write(tmp_path, "x:\n  a: ok\n  big: " + "${BIG}" * 200 + "\n")
    assert errors_of(path, env={"BIG": "b" * 100_000}) == [
        f"{path}:3: x.big: values read through ${{...}} exceed {MAX_INTERPOLATED} characters in all"
    ]
    # A secret "file" that never ends is read no further than the size limit.
    path = write(tmp_path, "x:\n  token: ${file:/dev/zero}\n")
    assert errors_of(path) == [
        f"{path}:2: x.token: cannot read secret file /dev/zero: larger than {MAX_FILE_SIZE} bytes"
    ]
    # A secret file keeps the text-mode reading it always had: CRLF lines, trailing newlines dropped.
    (tmp_path / "key").write_bytes(b"line1\r\nline2\r\n\r\n")
    path = write(tmp_path, "x:\n  key: ${file:key}\n")
    assert load_config(path, PLUGINS, env={})["x"]["key"] == "line1\nline2"


def test_unrepresentable_scalars_are_errors_at_their_line(tmp_path):
    path = write(tmp_path, f"server:\n  max_body: {'9' * 5000}\nx:\n  when: 0000-01-01\nplugins: {{disabled: [x]}}\n")
    result = check_config(path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}:2: server.max_body: invalid int: ")
    assert lines[1] == f"{path}:4: x.when: invalid timestamp: year 0 is out of range"


# --- a running daemon asked to reload a hostile or large file ----------------------


def get_health(d) -> float:
    """GET /healthz; return how long it took (the daemon must answer 200)."""
    started = time.monotonic()
    with urllib.request.urlopen(d.url + "/healthz", timeout=30) as response:
        assert response.status == 200
    return time.monotonic() - started


def channel_names(d) -> list[str]:
    status, body = d.request("GET", "/v1/notifications/channels")
    assert status == 200, body
    return [channel["name"] for channel in body["data"]]


CHANNELS = {"notifications": {"channels": {"journal": {"type": "log"}, "ops": {"type": "log"}}}}


def test_sighup_with_an_alias_bomb_keeps_the_daemon_and_its_old_config(tierd_daemon):
    d = tierd_daemon(CHANNELS)
    assert channel_names(d) == ["journal", "ops"]
    new = dict(d.config, notifications={"channels": {"journal": {"type": "log"}, "bomb-only": {"type": "log"}}})
    d.write_config(yaml.safe_dump(new, sort_keys=False) + alias_bomb())
    before = len(d.notify.drain())

    d.proc.send_signal(signal.SIGHUP)
    latencies = []
    while not any("READY=1" in m for m in d.notify.drain()[before:]):
        latencies.append(get_health(d))  # answered all along the reload
        assert d.proc.poll() is None, d.logs()
    assert "RELOADING=1" in "".join(d.notify.messages[before:])

    assert latencies and max(latencies) < 5
    assert f"reload refused: {d.config_path}:" in d.logs()
    assert f"too many alias expansions (limit {MAX_ALIAS_EXPANSIONS})" in d.logs()
    assert channel_names(d) == ["journal", "ops"]  # the old configuration still runs
    assert d.proc.poll() is None


def large_config(d, channels: dict) -> str:
    """d's configuration plus channels and ~38,000 allowed hosts: just under the size limit."""
    text = yaml.safe_dump(dict(d.config, notifications={"channels": channels}), sort_keys=False)
    text = text.replace("server:\n", "server:\n  allowed_hosts:\n  - 127.0.0.1\n  - PLACEHOLDER\n", 1)
    item = "  - h{:07d}.example.org\n"
    count = (MAX_FILE_SIZE - len(text) - 100) // len(item.format(0))
    text = text.replace("  - PLACEHOLDER\n", "".join(item.format(i) for i in range(count)))
    assert MAX_FILE_SIZE - 200 < len(text.encode()) <= MAX_FILE_SIZE
    return text


def test_reload_of_a_large_file_does_not_block_the_api(tierd_daemon):
    d = tierd_daemon(CHANNELS)
    d.write_config(large_config(d, {"journal": {"type": "log"}, "ops2": {"type": "log"}}))
    latencies, outcome = [], {}

    def reload():
        started = time.monotonic()
        outcome["response"] = d.request("POST", "/v1/admin/reload", {}, timeout=120)
        outcome["duration"] = time.monotonic() - started

    worker = threading.Thread(target=reload)
    worker.start()
    while worker.is_alive():
        latencies.append(get_health(d))
    worker.join()

    assert outcome["response"] == (200, {"reloaded": True})
    assert channel_names(d) == ["journal", "ops2"]
    # Parsing a MiB of YAML takes a second or so; /healthz kept answering meanwhile,
    # each time far faster than the reload took (it waited for all of it before).
    assert len(latencies) >= 5, (outcome, latencies)
    assert max(latencies) < outcome["duration"] / 4, (outcome, max(latencies))


# --- secrets read through ${...} never appear in errors ------------------------------

SECRET = "hunter2-Zebra Quokka/42"
WORDS = ("hunter2", "Zebra", "Quokka")


def assert_no_secret(text: str, *secrets: str):
    for secret in secrets:
        assert secret not in text, text
    for word in WORDS:
        assert word not in text, text


def test_no_field_type_shows_a_value_read_from_the_environment(tmp_path):
    fields = {
        "enum": Enum(["a", "b"]),
        "int": Int(),
        "float": Float(),
        "bool": Bool(),
        "decimal": Decimal(),
        "duration": Duration(),
        "url": Url(),
        "cidr": Cidr(),
        "timezone": TimeZone(),
        "cron": Cron(),
        "pattern": Str(pattern=r"[a-z]+"),
        "choices": Str(choices=["x", "y"]),
        "cafile": CaFile(),
        "list": List(Str()),
        "map": Map(Int()),
        "obj": Obj({}),
        "oneof": OneOf(Int(), Obj({})),
    }
    path = write(
        tmp_path,
        "x:\n"
        + "".join(f"  {name}: ${{SECRET}}\n" for name in fields)
        + "  cron2: ${CRON}\n  short: ${DURATION}\n  money: ${MONEY}\nserver:\n  listen: ${SECRET}\n",
    )
    fields |= {"cron2": Cron(), "short": Duration(min="5s"), "money": Decimal(min=0)}
    env = {"SECRET": SECRET, "CRON": "0 25 * * *", "DURATION": "1s", "MONEY": "-7.25"}
    errors = errors_of(path, {"x": Obj(fields)}, env=env)
    assert len(errors) == len(fields) + 1
    for error in errors:
        # The file's path is the test's temporary folder, which may hold "25".
        assert_no_secret(error.replace(str(path), "FILE"), SECRET, "25", "7.25")
        assert "<value of ${SECRET}, not shown>" in error or any(
            f"<value of ${{{name}}}, not shown>" in error for name in ("CRON", "DURATION", "MONEY")
        ), error
    text = "\n".join(errors)
    assert f"{path}:2: x.enum: expected one of 'a', 'b', got string <value of ${{SECRET}}, not shown>" in errors
    assert f"{path}:21: x.money: must be at least 0, got <value of ${{MONEY}}, not shown>" in errors
    assert f"{path}:23: server.listen: invalid listen address <value of ${{SECRET}}, not shown>" in text
    assert f"{path}:19: x.cron2: <value of ${{CRON}}, not shown> is not valid here" in errors
    assert f"{path}:20: x.short: must be at least 5s, got <value of ${{DURATION}}, not shown>" in errors


def test_a_cross_field_check_does_not_show_another_keys_secret(tmp_path):
    def check(value):  # as plugins' checks do: name the other key's value
        return [(("user",), f"user {value['user']!r} may not use password {value['password']!r}")]

    path = write(tmp_path, "x:\n  user: admin\n  password: ${PASSWORD}\n")
    errors = errors_of(path, {"x": Obj({"user": Str(), "password": Str()}, check=check)}, env={"PASSWORD": SECRET})
    assert errors == [f"{path}:2: x.user: user 'admin' may not use password <value of ${{PASSWORD}}, not shown>"]


def test_check_config_and_its_json_never_print_secrets(tmp_path):
    secret_file = tmp_path / "shadow"
    secret_file.write_text(f"root:{SECRET}:19000:0:99999:7:::\nsecond line\n")
    path = write(
        tmp_path,
        f"""
        logging:
          level: "${{file:{secret_file}}}"
        server:
          listen: "${{LISTEN}}"
          allowed_hosts: ["${{LISTEN}}", 7]
        """,
    )
    env = {"LISTEN": f"{SECRET}-x9"}
    result = check_config(path, env=env)
    assert result.returncode == 1
    assert_no_secret(result.stdout + result.stderr, SECRET, "root:", "second line")
    assert result.stderr.splitlines() == [
        f"{path}:2: logging.level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', "
        f"got string <value of ${{file:{secret_file}}}, not shown>",
        f"{path}:4: server.listen: invalid listen address <value of ${{LISTEN}}, not shown> "
        "(use HOST:PORT such as 127.0.0.1:8765 or [::1]:8765, or unix:/path/to.sock)",
        f"{path}:5: server.allowed_hosts[1]: expected a string, got int 7 (put it in quotes to make it a string)",
        "3 error(s)",
    ]

    result = check_config(path, "--json", env=env)
    assert result.returncode == 1
    assert_no_secret(result.stdout + result.stderr, SECRET, "root:", "second line")
    assert len(json.loads(result.stdout)["errors"]) == 3


def test_reload_refused_never_logs_a_secret(tierd_daemon, tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET + "\n")
    d = tierd_daemon(env={"LISTEN": SECRET})
    bad = dict(
        d.config,
        logging={"level": f"${{file:{secret_file}}}"},
        server=dict(d.config["server"], shutdown_grace="${LISTEN}"),
    )
    d.write_config(bad)

    status, body = d.request("POST", "/v1/admin/reload", {})
    assert status == 422 and body["error"]["code"] == "config_invalid"
    assert_no_secret(json.dumps(body), SECRET)
    logs = d.logs()
    assert_no_secret(logs, SECRET)
    assert f"reload refused: {d.config_path}:" in logs
    assert (
        f"logging.level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', got string <value of "
        f"${{file:{secret_file}}}, not shown>" in logs
    )
    assert "server.shutdown_grace: invalid duration <value of ${LISTEN}, not shown>" in logs
    assert get_health(d) < 5


# --- text that is not valid Unicode ----------------------------------------------------


def test_lone_surrogates_in_the_file_are_refused_at_their_key(tmp_path):
    path = write(
        tmp_path,
        r"""
        storage:
          path: "db\ud800.sqlite"
        logging:
          level: "\udc80"
        x:
          emoji: "\ud83d\ude00"
        y:
          "\ud800": 1
        z:
          url: "https://\ud800.example/"
        plugins:
          disabled: [z2]
        z2:
          anything: ["fine", {"\udfff": "key"}]
        """,
    )
    schemas = {"x": Obj({"emoji": Str()}), "y": Map(Int()), "z": Obj({"url": Url()})}
    errors = errors_of(path, schemas)
    assert [error.split(": ")[0] + ": " + error.split(": ")[1] for error in errors] == [
        f"{path}:2: storage.path",
        f"{path}:4: logging.level",
        f"{path}:6: x.emoji",
        f"{path}:8: y.\\ud800",
        f"{path}:10: z.url",
        f"{path}:14: z2.anything[1].\\udfff",
    ]
    assert errors[0].endswith(
        "not valid Unicode text: character 3 is U+D800, a lone surrogate "
        "(undecodable bytes, or a \\uD800-style escape: write characters "
        "above U+FFFF as \\U0001F600)"
    )
    assert "invalid key: not valid Unicode text" in errors[3] and "invalid key" in errors[5]

    # check-config prints them (escaped) instead of failing to encode them.
    result = check_config(path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "storage.path: not valid Unicode text" in result.stderr


def test_undecodable_environment_and_secret_files_are_refused(tmp_path):
    raw = b"tok\xffen".decode("utf-8", "surrogateescape")  # what os.environ holds for such bytes
    (tmp_path / "secret").write_bytes(b"\xed\xa0\x80 CESU-8 surrogate")
    path = write(tmp_path, f"server:\n  admin_token: ${{TOKEN}}\nstorage:\n  path: ${{file:{tmp_path}/secret}}\n")
    assert errors_of(path, env={"TOKEN": raw}) == [
        f"{path}:2: server.admin_token: not valid Unicode text: character 4 is U+DCFF, a lone surrogate "
        "(undecodable bytes, or a \\uD800-style escape: write characters above U+FFFF as \\U0001F600)",
        f"{path}:4: storage.path: cannot read secret file {tmp_path}/secret: not UTF-8 text",
    ]
    # The same through the CLI, with the variable really holding those bytes.
    result = subprocess.run(
        [sys.executable, "-m", "tierd", "--config", str(path), "check-config"],
        capture_output=True,
        env={**os.environ, "TOKEN": raw},
        timeout=30,
    )
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    assert b"server.admin_token: not valid Unicode text: character 4 is U+DCFF" in result.stderr


def test_request_body_fields_refuse_invalid_unicode():
    # The same schema types validate request bodies: nothing invalid gets through to SQLite.
    body = Obj({"name": Str(), "kind": Enum(["a"]), "url": Url(), "tags": Map(Str()), "data": Any()})
    clean, errors = validate(
        body,
        {
            "name": "\ud800",
            "kind": "\udc00",
            "url": "https://\udfff/",
            "tags": {"\ud801": "x", "ok": "\udbff"},
            "data": {"deep": [["\ud802"]]},
        },
    )
    assert sorted(e.path for e in errors) == sorted(
        [("name",), ("kind",), ("url",), ("tags", "\ud801"), ("tags", "ok"), ("data", "deep", 0, 0)]
    )
    assert all("not valid Unicode text" in e.message for e in errors)
    assert (
        validate(
            body,
            {
                "name": "Zürich 😀",
                "kind": "a",
                "url": "https://bücher.example/",
                "tags": {"ü": "😀"},
                "data": {"x": ["é"]},
            },
        )[1]
        == []
    )


# --- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (Int(), 10**20, "must be at most 9223372036854775807, got 100000000000000000000"),
        (Int(), -(10**20), "must be at least -9223372036854775808, got -100000000000000000000"),
        (Int(), 10**5000, "must be at most 9223372036854775807, got <a number of about 5001 digits>"),
        (Float(), math.inf, "must be a finite number, got inf"),
        (Float(), math.nan, "must be a finite number, got nan"),
        (Decimal(), "1e999999", "too large: at most 18 digits before the decimal point, got string '1e999999'"),
        (Decimal(), "NaN", "must be a finite decimal number, got string 'NaN'"),
        (Decimal(), math.inf, "must be a finite decimal number, got float inf"),
        (Duration(), math.inf, "invalid duration inf: must be a finite, non-negative time"),
        (Duration(), 1e300, "invalid duration 1e+300: longer than 365000d (1000 years)"),
        (Duration(), "99999999d", "invalid duration '99999999d': longer than 365000d (1000 years)"),
        (Duration(), "9" * 400 + "s", "invalid duration '" + "9" * 57 + "...': must be a finite, non-negative time"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value[:20],
)
def test_absurd_numbers_are_refused(field, value, message):
    clean, errors = validate(field, value, path=("x",))
    assert clean is None and [str(error) for error in errors] == [f"x: {message}"]


def test_number_bounds_keep_ordinary_values():
    assert validate(Int(), 2**63 - 1) == (2**63 - 1, [])
    assert validate(Int(max=10**30), 10**25) == (10**25, [])  # an explicit bound wins
    assert validate(Decimal(), "999999999999999999.99")[1] == []
    assert validate(Duration(), "365000d") == (365000 * 86400.0, [])


def test_yaml_infinities_and_huge_numbers_in_the_file(tmp_path):
    path = write(
        tmp_path,
        """
        server:
          max_body: 1.0e+999
          shutdown_grace: .inf
        x:
          rate: .nan
        """,
    )
    errors = errors_of(path, {"x": Obj({"rate": Float()})})
    assert errors == [
        f"{path}:2: server.max_body: expected an integer, got float inf",
        f"{path}:3: server.shutdown_grace: invalid duration inf: must be a finite, non-negative time",
        f"{path}:5: x.rate: must be a finite number, got nan",
    ]
