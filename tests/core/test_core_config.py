"""Configuration loading and the schema validator, on real files in tmp_path."""

import decimal
import ipaddress
import textwrap

import pytest

from tierd.core.config import Config, ConfigError, find_config_path, load_config
from tierd.core.schema import (
    Bool,
    Cidr,
    Cron,
    Decimal,
    Duration,
    Enum,
    Int,
    Invalid,
    List,
    Map,
    Obj,
    OneOf,
    SchemaError,
    Str,
    TimeZone,
    Url,
    describe,
    validate,
)

WEBHOOKS = Obj(
    {
        "timeout": Duration(default="15s"),
        "retry_schedule": List(Duration(), default=["0s", "5s", "5m"]),
        "max_in_flight": Int(default=200, min=1),
        "allow_destinations": List(Cidr(), default=[]),
        "signing": Obj({"algorithm": Enum(["v1"], default="v1"), "header": Str(default="webhook-signature")}),
    }
)
PLUGINS = {"webhooks": WEBHOOKS}


def write(tmp_path, text, name="tierd.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def errors_of(path, schemas=PLUGINS, env=None):
    with pytest.raises(ConfigError) as info:
        load_config(path, schemas, env=env or {})
    return info.value.errors


# --- loading ----------------------------------------------------------------


def test_defaults_without_a_file():
    config = load_config(None, PLUGINS, env={})
    assert isinstance(config, Config) and config.path is None
    assert config["server"]["listen"] == "127.0.0.1:8765"
    assert config["server"]["admin_token"] is None
    assert config["server"]["shutdown_grace"] == 10.0
    assert config["storage"] == {
        "path": "./var/tierd.db",
        "url": None,  # SQLite unless a PostgreSQL URL is given
        "busy_timeout": 5.0,
        "readers": 3,
        "event_retention": 30 * 86400.0,
    }
    assert config["logging"] == {"level": "INFO", "format": "text", "access_log": False}
    assert config["plugins"] == {"disabled": []}
    assert config["webhooks"]["retry_schedule"] == [0.0, 5.0, 300.0]


def test_defaults_are_not_shared_between_loads():
    first = load_config(None, PLUGINS, env={})
    first["server"]["allowed_hosts"].append("evil.example")
    assert load_config(None, PLUGINS, env={})["server"]["allowed_hosts"] == ["127.0.0.1", "localhost", "[::1]"]


def test_empty_file_and_empty_section_mean_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), PLUGINS, env={})["server"]["max_body"] == 262144
    config = load_config(write(tmp_path, "server:\n  # listen: x\n"), PLUGINS, env={})
    assert config["server"]["max_body"] == 262144


def test_nested_obj_defaults_are_filled(tmp_path):
    config = load_config(write(tmp_path, "webhooks:\n  timeout: 2s\n"), PLUGINS, env={})
    assert config["webhooks"]["timeout"] == 2.0
    assert config["webhooks"]["signing"] == {"algorithm": "v1", "header": "webhook-signature"}
    assert config.source_lines[("webhooks", "timeout")] == (2, 3)


def test_typo_key_names_file_line_and_suggestion(tmp_path):
    path = write(
        tmp_path,
        """
        server:
          listen: 127.0.0.1:9000
          max_bdy: 1000
        """,
    )
    assert errors_of(path) == [f"{path}:3: server.max_bdy: unknown key 'max_bdy' (did you mean 'max_body'?)"]


def test_wrong_type_names_expected_type_and_value(tmp_path):
    path = write(tmp_path, "server:\n  max_body: lots\n")
    assert errors_of(path) == [f"{path}:2: server.max_body: expected an integer, got string 'lots'"]


def test_bad_duration_at_list_index(tmp_path):
    path = write(
        tmp_path,
        """
        webhooks:
          retry_schedule:
            - 1s
            - 1h30m
            - 5x
        """,
    )
    assert errors_of(path) == [
        f"{path}:5: webhooks.retry_schedule[2]: invalid duration '5x' (use e.g. 500ms, 15s, 5m, 2h, 1d)"
    ]


def test_all_errors_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        """
        server:
          max_body: 0
        logging:
          level: info
        webhooks:
          timout: 5s
        """,
    )
    errors = errors_of(path)
    assert len(errors) == 3
    assert errors[0].startswith(f"{path}:2: server.max_body: must be at least 1")
    assert errors[1] == (
        f"{path}:4: logging.level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', "
        "got string 'info' (did you mean 'INFO'?)"
    )
    assert errors[2].startswith(f"{path}:6: webhooks.timout: unknown key")
    assert str(ConfigError(errors)) == "\n".join(errors)


def test_missing_required_key_uses_parent_line(tmp_path):
    schemas = {"smtp": Obj({"host": Str(required=True), "port": Int(default=25)})}
    path = write(tmp_path, "logging:\n  level: INFO\nsmtp:\n  port: 587\n")
    assert errors_of(path, schemas) == [f"{path}:3: smtp.host: required key is missing (a string)"]
    assert errors_of(None, schemas) == ["<defaults>: smtp.host: required key is missing (a string)"]


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "server:\n  listen: [unclosed\nstorage: {}\n")
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:3:")


def test_duplicate_keys_are_errors(tmp_path):
    path = write(tmp_path, "server:\n  max_body: 10\n  max_body: 20\n")
    assert errors_of(path) == [f"{path}:3: server.max_body: duplicate key (first defined on line 2)"]


def test_merge_keys_override_without_duplicate_error(tmp_path):
    path = write(
        tmp_path,
        """
        base: &base {listen: "127.0.0.1:1", max_body: 10}
        server:
          <<: *base
          max_body: 20
        """,
    )
    config = load_config(path, {"base": Obj({}, extra=True)}, env={})
    assert config["server"]["listen"] == "127.0.0.1:1" and config["server"]["max_body"] == 20


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert errors_of(path) == [
        f"{path}:1: the top level must be a mapping of sections (server:, storage:, ...), got a list"
    ]


def test_unknown_section_suggests_a_known_one(tmp_path):
    path = write(tmp_path, "webhook:\n  timeout: 5s\nfrobnicate: {}\n")
    assert errors_of(path) == [
        f"{path}:1: webhook: unknown section 'webhook' (did you mean 'webhooks'?)",
        f"{path}:3: frobnicate: unknown section 'frobnicate' (no installed plugin declares it)",
    ]


def test_disabled_plugin_section_is_not_validated(tmp_path):
    path = write(
        tmp_path,
        """
        plugins:
          disabled: [webhooks, reports]
        webhooks:
          timeout: not-a-duration
        reports:
          anything: [goes]
        """,
    )
    config = load_config(path, PLUGINS, env={})
    assert config["webhooks"] == {"timeout": "not-a-duration"}
    assert config["reports"] == {"anything": ["goes"]}


def test_plugin_disabled_by_module_name_owns_its_section(tmp_path):
    path = write(tmp_path, "plugins:\n  disabled: [tierd.plugins.webhooks]\nwebhooks: {timeout: 1x}\n")
    assert load_config(path, {}, env={})["webhooks"] == {"timeout": "1x"}


# --- interpolation ----------------------------------------------------------


def test_environment_interpolation(tmp_path):
    path = write(
        tmp_path,
        """
        server:
          admin_token: ${TOKEN}
          listen: "${HOST:-127.0.0.1}:${PORT:-8765}"
        storage:
          path: $$HOME/${EMPTY:-db}.sqlite
        """,
    )
    config = load_config(path, PLUGINS, env={"TOKEN": "s3cret", "PORT": "9000", "EMPTY": ""})
    assert config["server"]["admin_token"] == "s3cret"
    assert config["server"]["listen"] == "127.0.0.1:9000"
    assert config["storage"]["path"] == "$HOME/db.sqlite"


def test_missing_environment_variable_is_reported_once(tmp_path):
    path = write(tmp_path, "server:\n  max_body: ${MAX_BODY}\n")
    assert errors_of(path) == [f"{path}:2: server.max_body: environment variable MAX_BODY is not set"]


def test_file_secret(tmp_path):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "token").write_text("from-file\n")
    path = write(
        tmp_path,
        """
        server:
          admin_token: ${file:${CREDENTIALS_DIRECTORY}/token}
        storage:
          path: ${file:missing}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, PLUGINS, env={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    (error,) = info.value.errors
    assert error.startswith(f"{path}:4: storage.path: cannot read secret file {tmp_path}/missing")

    path.write_text("server:\n  admin_token: ${file:${CREDENTIALS_DIRECTORY}/token}\n")
    config = load_config(path, PLUGINS, env={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert config["server"]["admin_token"] == "from-file"


# --- finding the file -------------------------------------------------------


def test_find_config_path_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config_path(None, env={}) is None
    (tmp_path / "config").mkdir()
    local = write(tmp_path / "config", "")
    assert find_config_path(None, env={}).resolve() == local.resolve()
    other = write(tmp_path, "", name="other.yaml")
    assert find_config_path(None, env={"TIERD_CONFIG": str(other)}) == other
    assert find_config_path(str(local), env={"TIERD_CONFIG": str(other)}) == local
    with pytest.raises(ConfigError, match="does not exist"):
        find_config_path(str(tmp_path / "nope.yaml"), env={})


# --- schema fields ----------------------------------------------------------


def test_decimal_is_never_a_float(tmp_path):
    path = write(tmp_path, "fees:\n  rate: 0.1\n  flat: '2.50'\n  count: 3\n")
    schema = Obj({"rate": Decimal(), "flat": Decimal(), "count": Decimal()})
    fees = load_config(path, {"fees": schema}, env={})["fees"]
    assert fees == {"rate": decimal.Decimal("0.1"), "flat": decimal.Decimal("2.50"), "count": 3}
    assert all(type(value) is decimal.Decimal for value in fees.values())
    assert validate(Decimal(), True)[1] and validate(Decimal(), "1,000")[1]


def test_cron_and_cidr(tmp_path):
    schema = Obj({"at": Cron(), "nets": List(Cidr())})
    good = load_config(
        write(tmp_path, "x:\n  at: '0 6 * * mon-fri'\n  nets: [10.1.2.3/8, 'fd00::/8']\n"), {"x": schema}, env={}
    )["x"]
    assert good["nets"] == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    path = write(tmp_path, "x:\n  at: '0 25 * * *'\n  nets: [10.0.0.0/33]\n")
    errors = errors_of(path, {"x": schema})
    assert errors[0].startswith(f"{path}:2: x.at: invalid cron expression '0 25 * * *'")
    assert errors[1].startswith(f"{path}:3: x.nets[0]: invalid CIDR network '10.0.0.0/33'")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        (3, 3),
        (1.5, 1.5),
    ],
)
def test_duration_forms(text, seconds):
    assert validate(Duration(), text) == (seconds, [])


def test_scalar_fields_reject_wrong_types():
    cases = [
        (Int(), True),
        (Int(), 1.5),
        (Bool(), "yes"),
        (Str(), 1.0),
        (Url(), "ftp://x"),
        (Url(), "https://"),
        (TimeZone(), "Europe/Zurik"),
        (Duration(), -1),
        (Str(min_len=1), ""),
    ]
    for field, value in cases:
        assert validate(field, value)[1], (field, value)
    assert "did you mean 'Europe/Zurich'" in validate(TimeZone(), "Europe/Zurik")[1][0].message
    assert validate(Str(), None)[1][0].message == "expected a string, got null"
    assert validate(Str(nullable=True), None) == (None, [])


def test_secret_values_are_not_echoed():
    (error,) = validate(Int(secret=True), "hunter2")[1]
    assert "hunter2" not in error.message


def test_map_oneof_and_check():
    def check(value):
        return [(("low",), "must not exceed high")] if value["low"] > value["high"] else []

    schema = Map(OneOf(Duration(), Obj({"low": Int(), "high": Int()}, check=check)))
    value, errors = validate(
        schema,
        {"a": "5s", "b": {"low": 1, "high": 2}, "c": {"low": 3, "high": 2}, "d": {"low": "x", "high": 1}, "e": [1]},
        path=("limits",),
    )
    assert value["a"] == 5.0 and value["b"] == {"low": 1, "high": 2}
    assert [str(e) for e in errors] == [
        "limits.c.low: must not exceed high",
        "limits.d.low: expected an integer, got string 'x'",
        "limits.e: expected a duration or a mapping, got a list",
    ]


def test_schema_error_and_invalid():
    assert str(SchemaError(("webhooks", "retry_schedule", 2), "bad")) == "webhooks.retry_schedule[2]: bad"
    with pytest.raises(Invalid) as info:
        List(Int()).validate([1, "a", "b"], ("xs",))
    assert [e.path for e in info.value.errors] == [("xs", 1), ("xs", 2)]


def test_describe_lists_nested_fields():
    rows = {row[0]: row for row in describe(WEBHOOKS)}
    assert rows["timeout"][1:3] == ("duration", "15s")
    assert rows["retry_schedule[]"][1] == "duration"
    assert rows["signing.header"][2] == "webhook-signature"
