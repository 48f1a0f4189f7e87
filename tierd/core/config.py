"""Load tierd's one configuration file: find it, parse it, interpolate, validate.

Every problem is reported at once, each as ``FILE:LINE: KEY.PATH: message``
(see :class:`ConfigError`), so an admin fixes the file in one pass. To get
line numbers the YAML is composed into PyYAML's node tree and the Python
value is built from it by hand, recording where every key and list item sits.

String values may refer to the environment and to files (for systemd
credentials)::

    password: ${SMTP_PASSWORD}                  # error if unset
    from: ${SMTP_FROM:-tierd@localhost}         # default if unset or empty
    token: ${file:/run/credentials/tierd.service/token}   # file content, trailing newline dropped
    token: ${file:${CREDENTIALS_DIRECTORY}/token}
    price: $$5                                  # a literal "$5"

Interpolated values are always strings, and never shown in an error: the
error names the reference instead (``got <value of ${file:/run/x}, not shown>``).

A hostile or broken file is refused with a clear error, never a hang or a
crash: at most :data:`MAX_FILE_SIZE` bytes, :data:`MAX_DEPTH` levels of
nesting, :data:`MAX_ALIAS_EXPANSIONS` values built through aliases (a
"billion laughs" file of 1 KB would otherwise expand to 10**9 values) and
:data:`MAX_INTERPOLATED` characters put in by ``${...}`` references.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any as AnyType
from typing import NamedTuple

import yaml

from tierd.core.schema import (
    MISSING,
    Any,
    Bool,
    Duration,
    Enum,
    Field,
    Int,
    List,
    Obj,
    Reject,
    SchemaError,
    Str,
    did_you_mean,
    quote,
    show,
    unicode_problem,
    validate,
)

__all__ = [
    "Config",
    "ConfigError",
    "CORE_SCHEMAS",
    "DEFAULT_LOCATIONS",
    "ListenAddress",
    "MAX_ALIAS_EXPANSIONS",
    "MAX_DEPTH",
    "MAX_FILE_SIZE",
    "MAX_INTERPOLATED",
    "find_config_path",
    "load_config",
]

DEFAULTS_LABEL = "<defaults>"
DEFAULT_LOCATIONS = (Path("config/tierd.yaml"), Path("/etc/tierd/tierd.yaml"))

#: Bytes. The bundled, fully commented file is about 20 KB.
MAX_FILE_SIZE = 1024 * 1024
#: Values built again because an alias refers to them (merge keys included).
MAX_ALIAS_EXPANSIONS = 100_000
#: Levels of nested mappings and lists (PyYAML's composer recurses once per level).
MAX_DEPTH = 100
#: Characters that ``${...}`` references put into one file's values, all together.
MAX_INTERPOLATED = 16 * 1024 * 1024


class ConfigError(Exception):
    """The configuration cannot be used; ``.errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(self.errors)


class Config(dict):
    """The validated configuration: one key per section, every section present.

    ``path`` is the file it came from (None for built-in defaults);
    ``source_lines`` maps key paths (tuples) to ``(line, column)``, 1-based.
    """

    def __init__(self, data: AnyType = (), path: Path | None = None, source_lines: dict | None = None) -> None:
        super().__init__(data)
        self.path = path
        self.source_lines = source_lines or {}


# --- core sections ----------------------------------------------------------


class ListenAddress(Field):
    """Where the control API listens: ``HOST:PORT`` (``[::1]:8765`` for IPv6) or ``unix:/path``."""

    type_name = "listen address"

    def parse(self, value: AnyType) -> AnyType:
        if not isinstance(value, str):
            raise self.mismatch(value)
        problem = unicode_problem(value)
        if problem:
            raise Reject(problem)
        if value.startswith("unix:"):
            if len(value) == len("unix:"):
                raise Reject("unix: needs a socket path, e.g. unix:/run/tierd/api.sock")
            return value
        host, _, port = value.rpartition(":")
        bare_ipv6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
        if not host or bare_ipv6 or not port.isdigit() or int(port) > 65535:
            raise Reject(
                f"invalid listen address {quote(value)} (use HOST:PORT such as "
                "127.0.0.1:8765 or [::1]:8765, or unix:/path/to.sock)"
            )
        return value


CORE_SCHEMAS: dict[str, Field] = {
    "server": Obj(
        {
            "listen": ListenAddress(
                default="127.0.0.1:8765", doc="HOST:PORT or unix:/path/to.sock for the control API"
            ),
            "admin_token": Str(default=None, secret=True, doc="Token of the admin API; unset or empty disables it"),
            "max_body": Int(default=262144, min=1, doc="Largest accepted request body, in bytes"),
            "allowed_hosts": List(
                Str(min_len=1),
                default=["127.0.0.1", "localhost", "[::1]"],
                doc="Host header values accepted (DNS rebinding protection)",
            ),
            "shutdown_grace": Duration(default="10s", doc="Time given to work in flight on shutdown"),
            "header_timeout": Duration(
                default="10s", min="1s", doc="A connection that takes longer to send a request's headers is closed"
            ),
            "ui": Bool(default=True, doc="Serve the web console and the webhooks portal under /ui"),
            "ui_session": Duration(
                default="12h", min="1m", doc="How long a console sign-in lasts (a portal session: its link's life)"
            ),
            "public_url": Str(
                default=None,
                pattern=re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?\Z"),
                pattern_doc="an http(s) URL such as https://tierd.example.com",
                doc="The address people reach this daemon at, for the links it hands out (portal links); "
                "unset: the address the request that asks for one came to",
            ),
            "query_timeout": Duration(
                default="10s",
                min="0.1s",
                doc="A request's reads taking longer are stopped and it is answered 503 query_timeout",
            ),
        }
    ),
    "storage": Obj(
        {
            "path": Str(default="./var/tierd.db", min_len=1, doc="SQLite database file"),
            "url": Str(
                default=None,
                secret=True,
                pattern=re.compile(r"postgres(ql)?://\S+\Z"),
                pattern_doc="a PostgreSQL URL such as postgresql://tierd@db.example/tierd",
                doc="Store in PostgreSQL instead of the SQLite file at path (its password through ${file:...})",
            ),
            "busy_timeout": Duration(default="5s", doc="How long to wait for a locked database"),
            "readers": Int(
                default=3, min=1, max=32, doc="Connections that serve reads side by side (besides the hot path's own)"
            ),
            "event_retention": Duration(
                default="30d",
                doc="Events older than this are deleted once every consumer has handled them; 0 keeps them forever",
            ),
        }
    ),
    "logging": Obj(
        {
            "level": Enum(["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO"),
            "format": Enum(["text", "json"], default="text"),
            "access_log": Bool(default=False, doc="One INFO line per API request (method, path, status, time)"),
        }
    ),
    "plugins": Obj(
        {
            "disabled": List(Str(min_len=1), default=[], doc="Names of plugins not to load"),
        }
    ),
}


class _Sections(Obj):
    """The top level of the file: one section per core module and plugin."""

    def unknown_key_message(self, key: AnyType) -> str:
        hint = did_you_mean(key, self.fields) or " (no installed plugin declares it)"
        return f"unknown section {key!r}{hint}"


# --- finding and reading the file -------------------------------------------


def find_config_path(cli_path: str | None = None, env: Mapping[str, str] = os.environ) -> Path | None:
    """Return the file to load: ``--config``, ``$TIERD_CONFIG``, then the default locations.

    None means no file: built-in defaults. A path given explicitly (option or
    variable) must exist: silently falling back to defaults would hide a typo.
    """
    for given, origin in ((cli_path, "--config"), (env.get("TIERD_CONFIG"), "$TIERD_CONFIG")):
        if given:
            path = Path(given)
            if not path.is_file():
                reason = "is not a file" if path.exists() else "does not exist"
                raise ConfigError([f"{path}: configuration file {reason} (given by {origin})"])
            return path
    return next((path for path in DEFAULT_LOCATIONS if path.is_file()), None)


class _Interpolation(Exception):
    """A ``${...}`` reference that cannot be resolved."""


# `$$`, or `${...}` whose body may hold one level of nested `${...}`.
_REFERENCE = re.compile(r"\$\$|\$\{((?:\$\{[^{}]*\}|[^{}])*)\}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(
    text: str, env: Mapping[str, str], base_dir: Path, spend: Callable[[int], None] = lambda size: None
) -> str:
    """Replace ``$$``, ``${VAR}``, ``${VAR:-default}`` and ``${file:PATH}`` in text.

    ``spend(size)`` is told the length of every value put in, and may raise
    to stop a file from growing without bound (``${X}`` 200,000 times).
    """

    def resolve(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group(1)
        if expression.startswith("file:"):
            value = _read_secret(base_dir / _interpolate(expression[5:], env, base_dir, spend))
        else:
            name, has_default, default = expression.partition(":-")
            if not _VARIABLE.fullmatch(name):
                raise _Interpolation(f"invalid reference ${{{expression}}} (write $$ for a literal $)")
            env_value = env.get(name)
            if has_default and not env_value:  # shell semantics: unset or empty
                return _interpolate(default, env, base_dir, spend)
            if env_value is None:
                raise _Interpolation(f"environment variable {name} is not set")
            value = env_value
        spend(len(value))
        return value

    return _REFERENCE.sub(resolve, text)


def _read_secret(path: Path) -> str:
    """The content of a secret file (e.g. a systemd credential), without the trailing newline."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_SIZE + 1)  # ${file:/dev/zero} must not read forever
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise _Interpolation(f"cannot read secret file {path}: {reason}") from None
    if len(data) > MAX_FILE_SIZE:
        raise _Interpolation(f"cannot read secret file {path}: larger than {MAX_FILE_SIZE} bytes")
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")  # as text mode reads it


class _Problem(NamedTuple):
    """An error found while reading, with the line it belongs to (None: unknown)."""

    line: int | None
    text: str


def _position(mark: yaml.Mark | None) -> tuple[int, int]:
    if mark is None:  # an error PyYAML could not place: name the start of the file
        return 1, 1
    return mark.line + 1, mark.column + 1


def _read_file(path: Path, label: str) -> bytes:
    """The bytes of the configuration file, refusing one over :data:`MAX_FILE_SIZE`."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_SIZE + 1)
            size = max(os.fstat(file.fileno()).st_size, len(data))
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read configuration file: {exc.strerror}"]) from None
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError([f"{label}: configuration file too large: {size} bytes (the limit is {MAX_FILE_SIZE} bytes)"])
    return data


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than :data:`MAX_DEPTH` levels.

    Its composer recurses once per level: ``[[[[...`` 5000 deep would end in
    a RecursionError instead of an error naming the line.
    """

    def __init__(self, stream: bytes | str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _YamlReader:
    """Build the Python value of a YAML file from its node tree, recording positions.

    Syntax errors and files that expand beyond the limits abort (raise
    :class:`ConfigError`); errors in well-formed YAML (duplicate keys,
    unresolvable ``${...}``) are collected in ``problems`` so they are
    reported with the schema errors. ``interpolated`` maps the path of every
    value read through ``${...}`` to (value, how an error names it).
    """

    def __init__(self, label: str, env: Mapping[str, str], base_dir: Path) -> None:
        self.label = label
        self.env = env
        self.base_dir = base_dir
        self.lines: dict[tuple, tuple[int, int]] = {}
        self.problems: list[_Problem] = []
        self.failed_paths: set[tuple] = set()  # values already reported; skip their schema errors
        self.interpolated: dict[tuple, tuple[str, str]] = {}
        self._checked_mappings: set[int] = set()
        self._built: set[int] = set()  # nodes built once; building one again expands an alias
        self._expansions = 0
        self._expansion: tuple | None = None  # path of the outermost alias being expanded
        self._interpolated_size = 0

    def read(self, data: bytes) -> AnyType:
        self.loader = _Loader(data)
        try:
            node = self.loader.get_single_node()
            return {} if node is None else self._build(node, (), frozenset())
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([self._syntax_error(exc)]) from None
        except yaml.YAMLError as exc:  # e.g. undecodable bytes: no mark to point at
            raise ConfigError([f"{self.label}: {exc}"]) from None
        finally:
            self.loader.dispose()

    def _syntax_error(self, exc: yaml.MarkedYAMLError) -> str:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        line, column = _position(mark)
        return f"{self.label}:{line}:{column}: {message}"

    def _problem(self, node: yaml.Node, path: tuple, message: str) -> None:
        line = node.start_mark.line + 1
        self.problems.append(_Problem(line, f"{self.label}:{line}: {SchemaError(path, message)}"))

    def _abort(self, path: tuple, message: str) -> ConfigError:
        line = _line_of(path, self.lines) or 1
        return ConfigError([f"{self.label}:{line}: {SchemaError(path, message)}"])

    def _build(self, node: yaml.Node, path: tuple, active: frozenset) -> AnyType:
        if id(node) in active:  # an alias pointing at one of its own ancestors
            self._problem(node, path, "recursive alias")
            return None
        if len(path) > MAX_DEPTH:  # aliases nest what the composer saw as shallow
            raise self._abort(path, f"nested deeper than {MAX_DEPTH} levels")
        if id(node) in self._built:
            self._count_expansion(path)
        else:
            self._built.add(id(node))
        active = active | {id(node)}
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path, active)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[path + (index,)] = _position(item.start_mark)
                items.append(self._build(item, path + (index,), active))
            return items
        return self._build_scalar(node, path)

    def _count_expansion(self, path: tuple) -> None:
        """Count one value built again through an alias; abort past the limit.

        The error names the line of the alias that was being expanded
        (PyYAML keeps no position of its own for an alias): the line of its
        key, or of the list holding it.
        """
        if self._expansion is None or path[: len(self._expansion)] != self._expansion:
            self._expansion = path
        self._expansions += 1
        if self._expansions > MAX_ALIAS_EXPANSIONS:
            where = self._expansion if isinstance(self._expansion[-1], str) else self._expansion[:-1]
            raise self._abort(where, f"too many alias expansions (limit {MAX_ALIAS_EXPANSIONS})")

    def _spend(self, path: tuple, size: int) -> None:
        """Count characters put in by ``${...}``; abort past :data:`MAX_INTERPOLATED`."""
        self._interpolated_size += size
        if self._interpolated_size > MAX_INTERPOLATED:
            raise self._abort(path, f"values read through ${{...}} exceed {MAX_INTERPOLATED} characters in all")

    def _build_mapping(self, node: yaml.MappingNode, path: tuple, active: frozenset) -> dict:
        if id(node) not in self._checked_mappings:  # an aliased mapping is checked once
            self._checked_mappings.add(id(node))
            self._check_duplicates(node, path)
        self.loader.flatten_mapping(node)  # resolve `<<: *base` merge keys in place
        result = {}
        for key_node, value_node in node.value:  # merged keys first: explicit keys override
            key = self._build_key(key_node, path)
            if key is MISSING:
                continue
            self.lines[path + (key,)] = _position(key_node.start_mark)
            result[key] = self._build(value_node, path + (key,), active)
        return result

    def _build_key(self, key_node: yaml.Node, path: tuple) -> AnyType:
        """The Python key of a mapping entry, or MISSING (after reporting) if unusable."""
        if not isinstance(key_node, yaml.ScalarNode):
            self._problem(key_node, path, "mapping keys must be plain values, not lists or mappings")
            return MISSING
        return self._construct(key_node, path)

    def _construct(self, node: yaml.Node, path: tuple) -> AnyType:
        """The Python value of a scalar node, or MISSING (after reporting) if it has none."""
        try:
            return self.loader.construct_object(node)
        except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag such as !env
            self.problems.append(_Problem(node.start_mark.line + 1, self._syntax_error(exc)))
        except (ValueError, OverflowError) as exc:  # e.g. a 5000-digit integer, the date 0000-01-01
            kind = node.tag.rpartition(":")[2]
            self._problem(node, path, f"invalid {kind}: {str(exc).partition(';')[0]}")
        return MISSING

    def _check_duplicates(self, node: yaml.MappingNode, path: tuple) -> None:
        first_lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            try:
                key = self.loader.construct_object(key_node)
            except (yaml.YAMLError, ValueError, OverflowError):
                continue  # reported when the key is built
            line = key_node.start_mark.line + 1
            if key in first_lines:
                self._problem(key_node, path + (key,), f"duplicate key (first defined on line {first_lines[key]})")
            else:
                first_lines[key] = line

    def _build_scalar(self, node: yaml.Node, path: tuple) -> AnyType:
        value = self._construct(node, path)
        if value is MISSING:
            self.failed_paths.add(path)
            return None
        if isinstance(value, str) and "$" in value:
            written = value
            try:
                value = _interpolate(value, self.env, self.base_dir, lambda size: self._spend(path, size))
            except _Interpolation as exc:
                self._problem(node, path, str(exc))
                self.failed_paths.add(path)
                return value
            if any(match.group(1) is not None for match in _REFERENCE.finditer(written)):
                self.interpolated[path] = (value, _origin(written))
        return value


def _origin(written: str) -> str:
    """How an error names a value read through ``${...}``, instead of showing it."""
    reference = written if _REFERENCE.fullmatch(written) else quote(written)
    return f"<value of {reference}, not shown>"


_QUOTED = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")


class _Redactor:
    """Rewrites schema errors so that no value read through ``${...}`` shows.

    A value from the environment or a file may be a secret. Messages quote
    the value they reject (``quote``, ``repr`` or ``show``): at the error's
    own path every such form is replaced by the value's origin, however
    short; if what is left still holds a word of the value (a field quoted a
    part of it, e.g. one field of a cron expression), nothing of the message
    is kept. Elsewhere (a cross-field check quoting another key's value) a
    quoted value of 8 or more characters is replaced; shorter ones would be
    mistaken for ordinary words. Linear in the number of errors.
    """

    def __init__(self, interpolated: dict[tuple, tuple[str, str]]) -> None:
        self.interpolated = interpolated
        self.elsewhere = {value: origin for value, origin in reversed(interpolated.values()) if len(value) >= 8}

    def __call__(self, error: SchemaError) -> SchemaError:
        message = error.message
        own = self.interpolated.get(error.path)
        if own is not None:
            value, origin = own
            forms = {quote(value), repr(value)} | ({value} if len(value) >= 4 else set())
            pattern = re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True))))
            rest = pattern.sub("", message)
            if any(word in rest for word in re.findall(r"\w{2,}", value)):
                return SchemaError(error.path, f"{origin} is not valid here")
            message = pattern.sub(lambda match: origin, message)
        return SchemaError(error.path, _QUOTED.sub(self._elsewhere, message))

    def _elsewhere(self, match: re.Match) -> str:
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        return self.elsewhere.get(quoted) or match.group()


# --- validation -------------------------------------------------------------


def _line_of(path: tuple, lines: dict) -> int | None:
    """The line of the key at path, or of its nearest ancestor present in the file."""
    for length in range(len(path), 0, -1):
        if path[:length] in lines:
            line: int = lines[path[:length]][0]
            return line
    return None


def _disabled_plugins(raw: dict) -> list[str]:
    """plugins.disabled from the raw file; [] if invalid (its errors are reported later)."""
    clean, errors = validate(CORE_SCHEMAS["plugins"], raw.get("plugins") or MISSING)
    return [] if errors else clean["disabled"]


def _root_schema(plugin_schemas: Mapping[str, Field], disabled: list[str]) -> _Sections:
    clashes = sorted(set(plugin_schemas) & set(CORE_SCHEMAS))
    if clashes:
        raise ValueError(f"plugin config sections clash with core sections: {', '.join(clashes)}")
    sections = {**CORE_SCHEMAS, **plugin_schemas}
    for name in disabled:
        # Built-ins may be disabled by module name: tierd.plugins.webhooks owns `webhooks:`.
        section = name.rpartition(".")[2]
        if section not in CORE_SCHEMAS:
            # A disabled plugin may not even be installed: keep its section as written.
            sections[section] = Any(default=None, doc="section of a disabled plugin, not validated")
    return _Sections(sections)


def load_config(
    path: Path | None,
    plugin_schemas: Mapping[str, Field],
    env: Mapping[str, str] = os.environ,
    only: tuple[str, ...] | None = None,
) -> Config:
    """Read, interpolate and validate the configuration file (None: built-in defaults).

    ``plugin_schemas`` maps section names to schemas (from the
    ``tierd_config_schema`` hook). Returns a :class:`Config` with every
    section present and defaults filled in; raises :class:`ConfigError`
    listing every problem, sorted by line. ``only`` names the sections to
    validate, ignoring the rest of the file and its errors (the CLI reaching a
    running daemon needs server and storage alone).
    """
    label = str(path) if path is not None else DEFAULTS_LABEL
    raw, reader = {}, None
    if path is not None:
        path = Path(path)
        reader = _YamlReader(label, env, path.parent)
        raw = reader.read(_read_file(path, label))
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{label}:1: the top level must be a mapping of sections (server:, storage:, ...), got {show(raw)}"]
        )

    root = _root_schema(plugin_schemas, _disabled_plugins(raw))
    if only is not None:
        root = _Sections({name: root.fields[name] for name in only}, extra=True)
    # A section header whose keys are all commented out (`server:`) means "all defaults".
    raw = {
        name: {} if value is None and isinstance(root.fields.get(name), Obj) else value for name, value in raw.items()
    }
    clean, errors = validate(root, raw)

    lines = reader.lines if reader else {}
    problems = list(reader.problems) if reader else []
    if only is not None:  # a problem elsewhere in the file is not ours to report
        own_lines = {line for key, (line, _) in lines.items() if key[0] in only}
        problems = [problem for problem in problems if problem.line in own_lines]
    redact = _Redactor(reader.interpolated) if reader and reader.interpolated else None
    for error in errors:
        if reader and error.path in reader.failed_paths:
            continue  # already reported as the reason the value is wrong
        if redact:
            error = redact(error)
        line = _line_of(error.path, lines)
        where = f"{label}:{line}" if line is not None else label
        problems.append(_Problem(line, f"{where}: {error}"))
    if problems:
        # Stable sort: file order first, then errors without a line (absent keys and sections).
        problems.sort(key=lambda problem: (problem.line is None, problem.line or 0))
        raise ConfigError([problem.text for problem in problems])
    return Config(clean, path=path, source_lines=lines)


def peek_disabled_plugins(path: Path | None) -> list[str]:
    """``plugins.disabled`` read quickly, before any plugin is imported.

    A plugin that cannot even be imported (a missing optional dependency) can
    so be disabled in the file. Any problem here yields [] and is reported by
    the full ``load_config`` later.
    """
    if path is None:
        return []
    try:
        # The same guarded reader as load_config: a hostile file must not hang us here either.
        raw = _YamlReader(str(path), os.environ, Path(path).parent).read(_read_file(Path(path), str(path)))
        return _disabled_plugins(raw) if isinstance(raw, dict) else []
    except (ConfigError, AttributeError, TypeError):
        return []
