"""What CLI commands (core's and plugins') share: config, API client, output."""

from __future__ import annotations

import functools
import http.client
import json
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from tierd.core.config import ConfigError, ListenAddress, find_config_path, load_config
from tierd.core.schema import Reject

if TYPE_CHECKING:
    import pluggy

    from tierd.core.config import Config
    from tierd.core.registry import Registries


class ApiClient:
    """A small synchronous client for the running daemon's control API (admin token)."""

    def __init__(self, listen: str, token: str | None, timeout: float = 60.0) -> None:
        self.listen = listen
        self.token = token
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.listen.startswith("unix:"):
            path = self.listen[len("unix:") :]
            conn = http.client.HTTPConnection("localhost", timeout=self.timeout)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(path)
            conn.sock = sock
            return conn
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return http.client.HTTPConnection(host, int(port), timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        tenant: str | None = None,
        params: dict | None = None,
        body: bytes | Iterable[bytes] | None = None,
        content_type: str | None = None,
    ) -> Any:
        if params:
            clean = {k: v for k, v in params.items() if v is not None}
            if clean:
                path += "?" + urllib.parse.urlencode(clean)
        headers = self._headers(tenant)
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        response = self._send(method, path, body, headers)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw.decode(errors="replace")}
        if response.status >= 400:
            raise _api_error(response.status, data, raw)
        return data

    def download(self, path: str, out: Path, tenant: str | None = None) -> int:
        """Write the body of ``GET path`` (a file the API serves) to ``out``, streamed and
        renamed into place once whole; the bytes written. API errors as :meth:`request`."""
        headers = self._headers(tenant) | {"Accept": "*/*"}
        response = self._send("GET", path, None, headers)
        if response.status >= 400:
            raw = response.read()
            try:
                data = json.loads(raw)
            except ValueError:
                data = {}
            raise _api_error(response.status, data, raw)
        partial = out.with_name(f".{out.name}.partial")
        size = 0
        try:
            with open(partial, "wb") as f:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    size += len(chunk)
        except (OSError, http.client.HTTPException):
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, out)
        return size

    def _headers(self, tenant: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if tenant:
            headers["Tierd-Tenant"] = tenant
        return headers

    def _send(
        self, method: str, path: str, body: bytes | Iterable[bytes] | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        try:
            conn = self._connection()
            conn.request(method, path, body=body, headers=headers)
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> click.ClickException:
        return click.ClickException(f"cannot reach the tierd daemon at {self.listen}: {exc} (is `tierd run` running?)")

    def get(self, path: str, tenant: str | None = None, params: dict | None = None) -> Any:
        return self.request("GET", path, tenant=tenant, params=params)

    def get_all(self, path: str, tenant: str | None = None, params: dict | None = None) -> list[Any]:
        """Every item of a paged list (``data`` of each page, following ``next_cursor``)."""
        items: list[Any] = []
        cursor = None
        while True:
            page = self.get(path, tenant=tenant, params={"limit": 500, **(params or {}), "cursor": cursor})
            items += page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def post(self, path: str, json: Any = None, tenant: str | None = None, params: dict | None = None) -> Any:
        return self.request("POST", path, json_body=json if json is not None else {}, tenant=tenant, params=params)

    def put(self, path: str, json: Any = None, tenant: str | None = None) -> Any:
        return self.request("PUT", path, json_body=json or {}, tenant=tenant)

    def delete(self, path: str, tenant: str | None = None, params: dict | None = None) -> Any:
        return self.request("DELETE", path, tenant=tenant, params=params)


def _api_error(status: int, data: Any, raw: bytes) -> click.ClickException:
    """An API error answer as the CLI shows it: ``code: message`` and its details."""
    error = data.get("error", {}) if isinstance(data, dict) else {}
    message = error.get("message", raw.decode(errors="replace")[:500])
    return click.ClickException(
        f"{error.get('code', status)}: {message}"
        + "".join(f"\n  {line}" for line in _details(error.get("details"), message))
    )


def _details(details: Any, message: str) -> list[str]:
    """The lines of an API error's details that its message does not already say."""
    if isinstance(details, dict):
        return [f"{key}: {value}" for key, value in details.items() if str(value) not in message]
    if isinstance(details, list):
        # invalid_body: {"path", "message"} per problem, shown as check-config shows its errors.
        lines = [
            f"{d['path']}: {d['message']}" if isinstance(d, dict) and d.keys() == {"path", "message"} else str(d)
            for d in details
        ]
        return [line for line in lines if line not in message]
    return []


def listen_of_url(url: str) -> str:
    """``--url``/``$TIERD_URL`` (``http://HOST:PORT``, ``HOST:PORT`` or ``unix:/path``) as a listen address."""
    address = url.removeprefix("http://").rstrip("/")
    try:
        listen: str = ListenAddress().parse(address)
    except Reject as exc:
        raise click.BadParameter(f"{exc} (the control API is plain http://)", param_hint="--url / $TIERD_URL") from exc
    return listen


class CliContext:
    def __init__(self, config_path: str | None, url: str | None = None) -> None:
        self._config_path_arg = config_path
        self._url = url
        self._loaded: tuple[pluggy.PluginManager, Registries, Config] | None = None

    @property
    def config_path(self) -> Path | None:
        try:
            return find_config_path(self._config_path_arg)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc

    def load(self) -> tuple[pluggy.PluginManager, Registries, Config]:
        """(plugin manager, registries, config); a bad config is a clean error."""
        if self._loaded is None:
            from tierd.core.daemon import prepare

            try:
                self._loaded = prepare(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(
                    "invalid configuration; this command needs all of it (commands that only talk to the running "
                    "daemon, such as reload, events, webhooks, notify and recon, still work):\n" + str(exc)
                ) from exc
        return self._loaded

    @property
    def config(self) -> Config:
        return self.load()[2]

    @functools.cached_property
    def api(self) -> ApiClient:
        """A client of the running daemon, at ``--url``/``$TIERD_URL`` or ``server.listen``, with
        ``$TIERD_ADMIN_TOKEN`` or the configured (or locally kept) admin token.

        Only the server and storage sections are read (the admin token may be kept beside the
        database), so a mistake elsewhere in the file does not lock the operator out: ``tierd
        reload`` then reaches the daemon, which refuses the file and says why.
        """
        from tierd.core.tenants import local_admin_token

        listen = listen_of_url(self._url) if self._url else None
        token = os.environ.get("TIERD_ADMIN_TOKEN") or None
        if listen is None or token is None:
            try:
                config = load_config(self.config_path, {}, only=("server", "storage"))
            except ConfigError as exc:
                raise click.ClickException(
                    "cannot tell where the running daemon is: the configuration's server or "
                    "storage section has errors (or give --url and $TIERD_ADMIN_TOKEN):\n" + str(exc)
                ) from exc
            listen = listen or config["server"]["listen"]
            token = token or local_admin_token(config)
        return ApiClient(listen, token)

    @staticmethod
    def output(data: Any, columns: list[str] | None = None, as_json: bool = False) -> None:
        """Print ``data`` as JSON (for scripts) or as a readable table / key list."""
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
            return
        if isinstance(data, dict):
            width = max((len(k) for k in data), default=0)
            for key, value in data.items():
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, default=str)
                click.echo(f"{key.ljust(width)}  {value}")
            return
        echo_table(data, columns)

    @staticmethod
    def progress(
        iterable: Iterable[Any] | None = None, length: int | None = None, label: str = "", as_json: bool = False
    ) -> AbstractContextManager[Any]:
        if as_json or not sys.stderr.isatty():
            return _Quiet(iterable)
        return click.progressbar(iterable, length=length, label=label, file=sys.stderr)


class _Quiet:
    """A progress bar that shows nothing (for --json and pipes)."""

    def __init__(self, iterable: Iterable[Any] | None) -> None:
        self._iterable = iterable

    def __enter__(self) -> Any:
        return self._iterable if self._iterable is not None else self

    def __exit__(self, *exc: object) -> Literal[False]:
        return False

    def update(self, n: int) -> None:
        pass


def echo_table(rows: list[dict], columns: list[str] | None = None) -> None:
    if not rows:
        click.echo("(none)")
        return
    columns = columns or list(rows[0].keys())

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
        text = " ".join(str(value).split())  # a newline (e.g. in a response body) would break the table
        return text if len(text) <= 60 else text[:57] + "..."

    table = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def count_of(n: int, noun: str, plural: str | None = None) -> str:
    """``1 delivery``, ``2 deliveries``: a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def pass_cli(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the CliContext as its first argument."""

    @click.pass_context
    @functools.wraps(fn)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return fn(ctx.find_object(CliContext), *args, **kwargs)

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
tenant_option = click.option("--tenant", required=True, help="Tenant to act for.")


def tenant_command(
    group: click.Group,
    name: str,
    *options: Callable[[Callable[..., Any]], Callable[..., Any]],
    argument: str | None = None,
    as_json: bool = True,
) -> Callable[[Callable[..., Any]], click.Command]:
    """A ``tierd GROUP NAME`` command that acts for one tenant, as the plugins' commands do.

    Options in help order: ``--tenant``, the ``argument`` (a name) if any, the
    click ``options`` given, then ``--json`` unless ``as_json=False``. The
    function gets the :class:`CliContext` first, then its parameters by name
    (``tenant``, the argument's, the options', ``as_json``)::

        @tenant_command(recon_cli, "run", click.option("--account", required=True))
        def run(cli, tenant, account, as_json): ...
    """

    def decorate(fn: Callable[..., Any]) -> click.Command:
        fn = pass_cli(fn)
        if as_json:
            fn = json_option(fn)
        for option in reversed(options):
            fn = option(fn)
        if argument:
            fn = click.argument(argument)(fn)
        return group.command(name)(tenant_option(fn))

    return decorate
