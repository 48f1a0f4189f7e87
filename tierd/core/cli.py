"""The ``tierd`` command line. Plugins add their groups through ``tierd_cli``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
from pluggy import PluginManager

from tierd import __version__
from tierd.core import tenants as tenant_store
from tierd.core.cli_helpers import CliContext, json_option, pass_cli
from tierd.core.config import ConfigError
from tierd.core.logs import setup_logging
from tierd.core.plugins import make_plugin_manager
from tierd.core.registry import RegistryError

if TYPE_CHECKING:
    from tierd.core.storage import Database

T = TypeVar("T")


@click.group()
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar=None,
    help="Configuration file (default: $TIERD_CONFIG, ./config/tierd.yaml, /etc/tierd/tierd.yaml).",
)
@click.option(
    "--url",
    metavar="URL",
    envvar="TIERD_URL",
    help="The running daemon's API, http://HOST:PORT or unix:/path (default: $TIERD_URL, else the "
    "configuration's server.listen); its admin token: $TIERD_ADMIN_TOKEN, else the configuration's.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, url: str | None) -> None:
    """tierd: webhooks, notifications and bank reconciliation in one daemon."""
    ctx.obj = CliContext(config_path, url)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@cli.command()
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Overrides logging.level of the configuration.",
)
@pass_cli
def run(cli_ctx: CliContext, log_level: str | None) -> None:
    """Run the daemon in the foreground (systemd runs exactly this)."""
    from tierd.core.daemon import prepare, serve

    try:
        pm, registries, config = prepare(cli_ctx.config_path)
    except (ConfigError, click.ClickException) as exc:  # the latter: --config names no file
        reason = exc.message if isinstance(exc, click.ClickException) else f"invalid configuration:\n{exc}"
        click.echo(f"tierd: refusing to start: {reason}", err=True)
        sys.exit(1)
    except RegistryError as exc:  # a plugin registered something malformed: say which, without a traceback
        click.echo(f"tierd: refusing to start: {exc}", err=True)
        sys.exit(1)
    if log_level:
        config["logging"]["level"] = log_level.upper()
    setup_logging(config["logging"]["level"], config["logging"]["format"])
    sys.exit(asyncio.run(serve(pm, registries, config)))


@cli.command("check-config")
@json_option
@pass_cli
def check_config(cli_ctx: CliContext, as_json: bool) -> None:
    """Validate the configuration; print every error at once."""
    from tierd.core.daemon import prepare

    path = cli_ctx.config_path
    try:
        prepare(path)
    except ConfigError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "path": str(path) if path else None, "errors": exc.errors}, indent=2))
        else:
            for error in exc.errors:
                click.echo(error, err=True)
            click.echo(f"{len(exc.errors)} error(s)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"ok": True, "path": str(path) if path else None, "errors": []}))
    else:
        click.echo(f"{path or '<built-in defaults>'}: OK")


@cli.command()
@json_option
@pass_cli
def plugins(cli_ctx: CliContext, as_json: bool) -> None:
    """List loaded plugins, their versions, origins and hooks."""
    from tierd.core.plugins import get_plugins

    pm, registries, _ = cli_ctx.load()
    info = get_plugins(pm)
    if as_json:
        cli_ctx.output(info, as_json=True)
        return
    for plugin in info:
        click.echo(f"{plugin['name']} {plugin['version']} ({plugin['origin']})")
        click.echo(f"  hooks: {', '.join(h.removeprefix('tierd_') for h in plugin['hooks'])}")
    for kind in ("channels", "statement_importers", "report_sources", "reports", "report_exporters"):
        names = sorted(getattr(registries, kind))
        if names:
            click.echo(f"{kind.replace('_', ' ')}: {', '.join(names)}")


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"tierd {__version__}")


@cli.group("config")
def config_group() -> None:
    """The configuration file."""


def bundled_config() -> str:
    """The documented configuration shipped in the package (a copy of config/tierd.yaml)."""
    return (resources.files("tierd") / "tierd.yaml").read_text(encoding="utf-8")


@config_group.command("sample")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def config_sample(path: Path | None, force: bool) -> None:
    """Print the documented configuration file (every key with its default), or write it to PATH."""
    text = bundled_config()
    if path is None:
        click.echo(text, nl=False)
        return
    if not path.parent.is_dir():
        raise click.ClickException(f"{path.parent}: no such directory")
    try:
        with path.open("w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; --force overwrites it") from None
    click.echo(f"wrote {path}; check it with: tierd --config {path} check-config")


# --- database ---------------------------------------------------------------------------


def _with_db(cli_ctx: CliContext, fn: Callable[[Database, PluginManager], Awaitable[T]], migrate: bool = True) -> T:
    """Open the configured database, run ``fn(db)``, close it."""
    from tierd.core.daemon import all_migrations
    from tierd.core.storage import UnsupportedBackend, open_database

    pm, _, config = cli_ctx.load()

    async def main() -> T:
        db = await open_database(config["storage"])
        try:
            if migrate:
                await db.migrate(all_migrations(pm, db.dialect))
            return await fn(db, pm)
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except tenant_store.TenantError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc
    except UnsupportedBackend as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@json_option
@pass_cli
def migrate(cli_ctx: CliContext, as_json: bool) -> None:
    """Apply pending database migrations."""
    from tierd.core.daemon import all_migrations

    applied = _with_db(cli_ctx, lambda db, pm: db.migrate(all_migrations(pm, db.dialect)), migrate=False)
    if as_json:
        cli_ctx.output([{"namespace": ns, "version": v} for ns, v in applied], as_json=True)
    elif applied:
        for ns, v in applied:
            click.echo(f"applied {ns} {v}")
    else:
        click.echo("database is up to date")


@cli.group()
def db() -> None:
    """Database status and backups."""


@db.command("status")
@json_option
@pass_cli
def db_status(cli_ctx: CliContext, as_json: bool) -> None:
    """Show migrations applied and pending per namespace."""
    from tierd.core.daemon import all_migrations

    async def status(database: Database, pm: PluginManager) -> tuple[list[dict], dict]:
        return await database.migration_status(all_migrations(pm, database.dialect)), await database.space()

    rows, space = _with_db(cli_ctx, status, migrate=False)
    from tierd.core.storage import safe_url

    storage = cli_ctx.config["storage"]
    if not as_json and storage.get("url"):
        click.echo(f"database: PostgreSQL at {safe_url(storage['url'])}")
        click.echo(f"size: {space['bytes'] / 1e6:.1f} MB (pg_database_size; VACUUM is PostgreSQL's own, autovacuum)")
    elif not as_json:
        click.echo(f"database: {storage['path']}")
        click.echo(f"size: {_space_line(space)}")
        if space["auto_vacuum"] != 2:
            click.echo("  made by an older tierd: the file never shrinks; run `tierd db compact` once (daemon stopped)")
    cli_ctx.output(rows, ["namespace", "applied", "available", "pending"], as_json)


def _space_line(space: dict) -> str:
    size = space["page_count"] * space["page_size"]
    free = space["freelist_count"] * space["page_size"]
    return f"{size / 1e6:.1f} MB, of which {free / 1e6:.1f} MB free for reuse"


@db.command("compact")
@json_option
@pass_cli
def db_compact(cli_ctx: CliContext, as_json: bool) -> None:
    """Shrink the file to its data and let it follow retention from now on.

    Once, for a database made by an older tierd (newer ones shrink by
    themselves as retention prunes). Stop the daemon first: this rewrites the
    whole file, and needs as much free disk as the database takes.
    """
    from tierd.core.storage import DatabaseInUse, claim, release

    if cli_ctx.config["storage"].get("url"):
        raise click.ClickException(
            "storage is PostgreSQL: compacting is its own VACUUM (autovacuum does it as it goes; "
            "VACUUM FULL rewrites a table, locking it)"
        )
    path = cli_ctx.config["storage"]["path"]
    if not Path(path).exists():
        raise click.ClickException(f"{path}: no such database")
    try:
        held = claim(path)
    except DatabaseInUse as exc:
        raise click.ClickException(f"{exc}: stop it first (systemctl stop tierd), then run this again") from None
    started = time.monotonic()

    async def compact(database: Database, pm: PluginManager) -> tuple[dict, dict]:
        before = await database.space()
        if not as_json:
            click.echo(f"compacting {path} ({_space_line(before)}); this may take a while", err=True)
        await database.compact()
        return before, await database.space()

    try:
        before, after = _with_db(cli_ctx, compact, migrate=False)
    finally:
        release(held)
    result = {
        "path": path,
        "bytes_before": before["page_count"] * before["page_size"],
        "bytes_after": after["page_count"] * after["page_size"],
        "seconds": round(time.monotonic() - started, 1),
    }
    if as_json:
        cli_ctx.output(result, as_json=True)
    else:
        click.echo(
            f"{path}: {result['bytes_before'] / 1e6:.1f} MB -> {result['bytes_after'] / 1e6:.1f} MB"
            f" in {result['seconds']} s; from now on it shrinks as retention prunes"
        )


@db.command("backup")
@click.argument("path")
@pass_cli
def db_backup(cli_ctx: CliContext, path: str) -> None:
    """Write a consistent copy of the database to PATH (safe while the daemon runs)."""
    from tierd.core.storage import safe_url

    url = cli_ctx.config["storage"].get("url")
    if url:
        raise click.ClickException(
            "storage is PostgreSQL: back it up with PostgreSQL's own tools, e.g. "
            f"pg_dump --format=custom --file={path} '{safe_url(url)}' (consistent while tierd runs)"
        )
    folder = Path(path).parent
    if not folder.is_dir():  # a typo must not become a tree of folders
        raise click.ClickException(f"{folder}: no such directory")
    _with_db(cli_ctx, lambda database, pm: database.backup(path), migrate=False)
    click.echo(f"backup written to {path}")


@db.command("copy")
@click.option(
    "--to", "url", required=True, metavar="URL", help="The empty PostgreSQL database: postgresql://user@host/db."
)
@json_option
@pass_cli
def db_copy(cli_ctx: CliContext, url: str, as_json: bool) -> None:
    """Copy the SQLite database into an empty PostgreSQL database (daemon stopped).

    Builds tierd's tables there (every plugin's PostgreSQL migrations), copies
    every row in one transaction (a failed copy leaves the target empty),
    checks the row counts of each table and says what to change in the
    configuration. The SQLite file is only read.
    """
    from tierd.core.daemon import all_migrations
    from tierd.core.dbcopy import CopyRefused, copy_database
    from tierd.core.storage import DatabaseInUse, UnsupportedBackend, claim, release, safe_url

    storage = cli_ctx.config["storage"]
    if storage.get("url"):
        raise click.ClickException(f"storage is already PostgreSQL ({safe_url(storage['url'])}): nothing to copy")
    path = storage["path"]
    if not Path(path).is_file():
        raise click.ClickException(f"{path}: no such database")
    try:
        migrations = all_migrations(cli_ctx.load()[0], "postgresql")
    except UnsupportedBackend as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        held = claim(path)
    except DatabaseInUse as exc:
        raise click.ClickException(f"{exc}: stop it first (systemctl stop tierd), then run this again") from None

    shown: dict[str, float] = {}

    def progress(table: str, done: int, total: int) -> None:
        # A line per table when it is done, and every few seconds within a long one.
        now = time.monotonic()
        if done == total or now - shown.get(table, now - 5) >= 5:
            shown[table] = now
            click.echo(f"  {table}: {done:,} of {total:,} rows", err=True)

    if not as_json:
        click.echo(f"copying {path} to {safe_url(url)}", err=True)
    try:
        result = asyncio.run(copy_database(path, url, migrations, None if as_json else progress))
    except CopyRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        release(held)
    if as_json:
        cli_ctx.output(result.as_dict() | {"from": path, "to": safe_url(url)}, as_json=True)
    else:
        rows = [
            {"table": t.table, "sqlite": t.sqlite, "postgresql": t.postgresql, "check": "ok" if t.ok else "MISMATCH"}
            for t in result.tables
        ]
        cli_ctx.output(rows, ["table", "sqlite", "postgresql", "check"])
        total = sum(t.postgresql for t in result.tables)
        click.echo(f"{total:,} rows in {len(result.tables)} tables copied in {result.seconds:.1f} s")
        if result.not_utf8:
            click.echo(
                f"{result.not_utf8} text value(s) were not UTF-8 (stored by an older tierd): "
                "copied with U+FFFD in place of the bad bytes"
            )
    if not result.ok:
        bad = ", ".join(f"{t.table} {t.sqlite} != {t.postgresql}" for t in result.tables if not t.ok)
        click.echo(f"tierd: row counts differ ({bad}): do not switch to this copy", err=True)
        sys.exit(1)
    if not as_json:
        click.echo(
            "\nTo run on it, add to the configuration's storage section:\n"
            "  storage:\n"
            "    url: ${file:/run/credentials/tierd.service/db-url}\n"
            f"with the URL ({safe_url(url)}, its password included) in a file only root reads, handed to the\n"
            "service as a systemd credential (LoadCredential=db-url:/etc/tierd/db-url in the unit): no password\n"
            "in the configuration. Keep storage.path as it is: its folder still holds the admin token and report\n"
            f"files. {path} is left untouched; keep it until tierd runs well on PostgreSQL."
        )


# --- tenants and tokens -----------------------------------------------------------------


def _ts(value: str | None) -> str | None:
    """An API time (ISO-8601 UTC) shortened for tables."""
    return value[:16].replace("T", " ") if value else None


@cli.group()
def tenants() -> None:
    """Create and list tenants."""


@tenants.command("create")
@click.argument("name")
@json_option
@pass_cli
def tenants_create(cli_ctx: CliContext, name: str, as_json: bool) -> None:
    """Create tenant NAME."""
    tenant = _with_db(cli_ctx, lambda db, pm: tenant_store.create_tenant(db, name))
    cli_ctx.output(tenant, as_json=as_json) if as_json else click.echo(f"created tenant {name}")


@tenants.command("list")
@json_option
@pass_cli
def tenants_list(cli_ctx: CliContext, as_json: bool) -> None:
    """List tenants."""
    rows = _with_db(cli_ctx, lambda db, pm: tenant_store.list_tenants(db))
    if not as_json:
        rows = [r | {"created_at": _ts(r["created_at"])} for r in rows]
    cli_ctx.output(rows, ["id", "active_tokens", "created_at"], as_json)


@cli.group()
def tokens() -> None:
    """Create, list and revoke tenant API tokens."""


@tokens.command("create")
@click.option("--tenant", required=True)
@click.option("--description", default="")
@json_option
@pass_cli
def tokens_create(cli_ctx: CliContext, tenant: str, description: str, as_json: bool) -> None:
    """Create a token for TENANT. It is printed once; only its hash is stored."""
    token = _with_db(cli_ctx, lambda db, pm: tenant_store.create_token(db, tenant, description))
    if as_json:
        cli_ctx.output(token, as_json=True)
    else:
        click.echo(f"token {token['id']} for tenant {tenant} (shown once, store it now):", err=True)
        click.echo(token["token"])


@tokens.command("list")
@click.option("--tenant")
@json_option
@pass_cli
def tokens_list(cli_ctx: CliContext, tenant: str | None, as_json: bool) -> None:
    """List tokens (never the tokens themselves)."""
    rows = _with_db(cli_ctx, lambda db, pm: tenant_store.list_tokens(db, tenant))
    if not as_json:
        rows = [r | {"created_at": _ts(r["created_at"]), "revoked_at": _ts(r["revoked_at"])} for r in rows]
    cli_ctx.output(rows, ["id", "tenant", "description", "created_at", "revoked_at"], as_json)


@tokens.command("revoke")
@click.argument("token_id")
@pass_cli
def tokens_revoke(cli_ctx: CliContext, token_id: str) -> None:
    """Revoke token TOKEN_ID (takes effect within 5 seconds in a running daemon)."""
    _with_db(cli_ctx, lambda db, pm: tenant_store.revoke_token(db, token_id))
    click.echo(f"revoked {token_id}")


# --- events -----------------------------------------------------------------------------


@cli.group()
def events() -> None:
    """Publish and list events through the running daemon."""


@events.command("publish")
@click.option("--tenant", required=True)
@click.option("--type", "type_", required=True, help="e.g. invoice.paid")
@click.option("--data", default="{}", help="JSON object")
@click.option("--id", "key", default=None, help="Idempotency key")
@json_option
@pass_cli
def events_publish(cli_ctx: CliContext, tenant: str, type_: str, data: str, key: str | None, as_json: bool) -> None:
    """Publish one event for TENANT."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    body = {"type": type_, "data": payload} | ({"id": key} if key else {})
    cli_ctx.output(cli_ctx.api.post("/v1/events", body, tenant=tenant), as_json=as_json)


@events.command("list")
@click.option("--tenant")
@click.option("--type", "type_", default=None)
@click.option("--limit", default=50)
@json_option
@pass_cli
def events_list(cli_ctx: CliContext, tenant: str | None, type_: str | None, limit: int, as_json: bool) -> None:
    """List recent events."""
    data = cli_ctx.api.get("/v1/events", tenant=tenant, params={"type": type_, "limit": limit})
    cli_ctx.output(data["data"], ["id", "tenant", "type", "created_at"], as_json)


@events.command("types")
@click.option("--tenant", help="Also list this tenant's own types, as seen in its latest events.")
@json_option
@pass_cli
def events_types(cli_ctx: CliContext, tenant: str | None, as_json: bool) -> None:
    """List the event types plugins declare, and a tenant's own as seen."""
    entries = cli_ctx.api.get_all("/v1/event-types", tenant=tenant)
    if not as_json:
        entries = [
            e
            | {
                "from": e["plugin"] or "seen",
                "flags": ",".join(
                    flag
                    for flag, on in (("operator-alert", e["operator_alert"]), ("no-webhook", not e["webhook"]))
                    if on
                )
                or "-",
            }
            for e in entries
        ]
    columns = ["name", "from", "severity", "flags"] + (["last_seen_at"] if tenant else []) + ["description"]
    cli_ctx.output(entries, columns, as_json)


@cli.command()
@pass_cli
def reload(cli_ctx: CliContext) -> None:
    """Ask the running daemon to reload its configuration (it refuses a file with errors and says which)."""
    cli_ctx.api.post("/v1/admin/reload")
    click.echo("configuration reloaded")


@cli.group()
def jobs() -> None:
    """The running daemon's timers (retention, schedules): list them, run one now."""


@jobs.command("list")
@json_option
@pass_cli
def jobs_list(cli_ctx: CliContext, as_json: bool) -> None:
    """Every timer with its schedule and next run."""
    rows = cli_ctx.api.get("/v1/admin/jobs")["data"]
    cli_ctx.output(rows, ["id", "trigger", "next_run_at"], as_json)


@jobs.command("run")
@click.argument("job_id")
@json_option
@pass_cli
def jobs_run(cli_ctx: CliContext, job_id: str, as_json: bool) -> None:
    """Run JOB_ID now (e.g. core.prune_events after lowering storage.event_retention);
    its schedule goes on. The daemon's log says what the job did."""
    job = cli_ctx.api.post(f"/v1/admin/jobs/{job_id}/run")
    if as_json:
        cli_ctx.output(job, as_json=True)
    else:
        click.echo(f"{job_id} runs now; then {job['trigger']}")


@cli.command()
@json_option
@pass_cli
def nodes(cli_ctx: CliContext, as_json: bool) -> None:
    """The tierd nodes on this database and what each runs: its consumers, and
    "timers" on the one that runs the cluster's timers (on SQLite, one node)."""
    rows = cli_ctx.api.get("/v1/admin/nodes")["data"]
    if not as_json:
        rows = [r | {"holds": ", ".join(r["holds"]) or "-", "this": "*" if r["this"] else ""} for r in rows]
    cli_ctx.output(rows, ["node", "this", "connected_since", "connections", "holds"], as_json)


def _config_path_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def build_cli(argv: list[str] | None = None) -> click.Group:
    """The root group with every enabled plugin's commands added."""
    from tierd.core.config import find_config_path, peek_disabled_plugins

    try:
        path = find_config_path(_config_path_from_argv(argv or []))
    except ConfigError:
        path = None  # the command itself reports the missing file
    pm = make_plugin_manager(peek_disabled_plugins(path))
    pm.hook.tierd_cli(cli=cli)
    return cli


def main() -> None:
    build_cli(sys.argv[1:])(prog_name="tierd")
