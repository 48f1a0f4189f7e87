"""HTTP routes under ``/v1/reconciliation``: accounts, imports, ledger, runs, matches.

Every handler resolves the account inside the caller's tenant first; an
account of another tenant is answered exactly like a missing one (404).
Who did something is :func:`tierd.core.api.actor_of`: the token ("admin" or
"<tenant>/<token id>"), plus "for <name>" when a front end passes ``Tierd-Actor``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from tierd.core.api import (
    NO_BODY,
    PAGED,
    ApiError,
    Route,
    actor_of,
    body_of,
    daemon_of,
    int_cursor,
    int_param,
    json_response,
    page,
    page_params,
    query_choice,
    require_tenant,
)
from tierd.core.registry import StatementError
from tierd.core.schema import Decimal as DecimalField
from tierd.core.schema import Int, List, Obj, SchemaError, Str

from . import aliases, candidates, imports, ledger, manual, present, runs, store
from .config import ACCOUNT_ID_RE, CURRENCY_RE, UnknownLayout, layout, section

PREFIX = "/v1/reconciliation/accounts"
TAG = "reconciliation"
#: Longest file name an import records.
MAX_FILENAME = 255


async def account_of(request: web.Request) -> tuple[str, dict]:
    tenant = require_tenant(request)
    account = await store.get_account(daemon_of(request).db, tenant, request.match_info["account"])
    if account is None:
        raise ApiError(404, "not_found", f"no reconciliation account {request.match_info['account']!r}")
    return tenant, account


def found(obj: dict | None, what: str) -> dict:
    """``obj``, or a 404 naming ``what`` when it is None."""
    if obj is None:
        raise ApiError(404, "not_found", f"no {what}")
    return obj


# --- accounts ---------------------------------------------------------------------------------------


async def list_accounts(request):
    tenant = require_tenant(request)
    return json_response(
        {"data": [present.account(a) for a in await store.list_accounts(daemon_of(request).db, tenant)]}
    )


ACCOUNT_BODY = Obj(
    {
        "id": Str(
            required=True,
            pattern=ACCOUNT_ID_RE,
            pattern_doc="letters, digits, '.', '_' or '-', up to 64 characters, starting with a letter or digit",
        ),
        "currency": Str(required=True, pattern=CURRENCY_RE, pattern_doc="an ISO 4217 code such as EUR"),
        "name": Str(max_len=200, default=None),
        "iban": Str(max_len=200, default=None),
        "account_number": Str(max_len=200, default=None),
        "csv_format": Str(max_len=200, default=None, doc="a reconciliation.csv_formats entry, for CSV statements"),
        "ledger_format": Str(max_len=200, default=None, doc="a reconciliation.ledger_formats entry, for CSV ledgers"),
    }
)


def _known_layouts(request, body: dict) -> list[SchemaError]:
    """The body_check of an account: its layouts must be defined in the running configuration."""
    cfg = section(daemon_of(request).config)
    return [
        SchemaError((key,), f"{body[key]!r} is not defined in reconciliation.{table}")
        for key, table in (("csv_format", "csv_formats"), ("ledger_format", "ledger_formats"))
        if body[key] is not None and body[key] not in cfg[table]
    ]


async def create_account(request):
    tenant = require_tenant(request)
    daemon = daemon_of(request)
    body = body_of(request)
    if not await daemon.tenant_exists(tenant):
        raise ApiError(404, "not_found", f"no tenant {tenant!r}")
    acct = {
        "id": body["id"],
        "name": body.get("name") or "",
        "currency": body["currency"],
        "iban": (body.get("iban") or "").replace(" ", "").upper(),
        "account_number": body.get("account_number") or "",
        "csv_format": body.get("csv_format"),
        "ledger_format": body.get("ledger_format"),
        "created_by": actor_of(request),
    }
    if not await store.create_account(daemon.db, tenant, acct, daemon.clock.time()):
        raise ApiError(409, "account_exists", f"account {body['id']!r} already exists")
    return json_response(present.account(await store.get_account(daemon.db, tenant, body["id"])), status=201)


async def get_account(request):
    _, account = await account_of(request)
    return json_response(present.account(account))


def _layout(cfg: dict, table: str, name: str | None) -> dict | None:
    try:
        return layout(cfg, table, name)
    except UnknownLayout as exc:
        raise ApiError(422, "unknown_layout", str(exc)) from None


# --- statements --------------------------------------------------------------------------------------


async def read_upload(request: web.Request, limit: int) -> tuple[bytes, str]:
    """The file of a raw or multipart upload, streamed with its own size limit.

    Statement files are larger than the API's general body limit, so the
    body is read from the stream here rather than through ``read()``.
    """
    filename = request.query.get("filename", "")
    if request.content_type.startswith("multipart/"):
        data, filename = await _multipart_file(request, limit, filename)
    else:
        data = await _read_limited(request.content, limit)
        if not data:
            raise ApiError(400, "file_required", "the request body is empty: send the statement file")
    # isprintable() is also False for lone surrogates (aiohttp's escapes of bytes that are not UTF-8).
    if len(filename) > MAX_FILENAME or not filename.isprintable():
        raise ApiError(
            400, "invalid_filename", f"the file name must be printable text of at most {MAX_FILENAME} characters"
        )
    return data, filename


async def _multipart_file(request: web.Request, limit: int, filename: str) -> tuple[bytes, str]:
    """The first file part of a multipart body (named ``file`` or carrying a file name)."""
    try:
        reader = await request.multipart()
        async for part in reader:
            # A nested multipart is no file.
            if isinstance(part, BodyPartReader) and (part.filename or part.name == "file"):
                return await _read_limited(part, limit), part.filename or filename
    except (ValueError, HttpProcessingError) as exc:  # no boundary, no parts, bad part headers
        raise ApiError(400, "invalid_multipart", f"the multipart body cannot be read: {str(exc)[:200]}") from None
    raise ApiError(400, "file_required", "the multipart body has no file part")


async def _read_limited(stream, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = await stream.read_chunk(65536) if hasattr(stream, "read_chunk") else await stream.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "body_too_large", f"statement exceeds {limit} bytes (reconciliation.max_statement_size)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def import_statement(request):
    tenant, account = await account_of(request)
    daemon = daemon_of(request)
    cfg = section(daemon.config)
    fmt = request.query.get("format") or None
    if fmt is not None and fmt not in daemon.registries.statement_importers:
        raise ApiError(
            422, "unknown_format", f"unknown format {fmt!r}", {"known": sorted(daemon.registries.statement_importers)}
        )
    csv_layout = _layout(cfg, "csv_formats", account["csv_format"])
    data, filename = await read_upload(request, cfg["max_statement_size"])
    try:
        result = await imports.import_statement(
            daemon, tenant, account, data, fmt=fmt, filename=filename, csv_layout=csv_layout, actor=actor_of(request)
        )
    except imports.AccountMismatch as exc:
        raise ApiError(422, "statement_account_mismatch", str(exc), {"location": exc.location}) from exc
    except StatementError as exc:
        raise ApiError(422, "statement_invalid", str(exc), {"location": exc.location}) from exc
    return json_response(result, status=201)


# --- ledger ------------------------------------------------------------------------------------------


async def post_ledger(request):
    tenant, account = await account_of(request)
    daemon = daemon_of(request)
    cfg = section(daemon.config)
    raw, _ = await read_upload(request, cfg["max_statement_size"])
    is_csv = request.content_type in ("text/csv", "application/csv") or request.query.get("format") == "csv"
    try:
        if is_csv:
            items = ledger.parse_csv_entries(
                raw, _layout(cfg, "ledger_formats", request.query.get("layout") or account["ledger_format"])
            )
        else:
            items = ledger.parse_json_entries(raw)
        entries = ledger.validate_entries(items, account["currency"])
    except ledger.LedgerError as exc:
        raise ApiError(422, "ledger_invalid", str(exc), exc.problems) from exc
    except UnicodeDecodeError as exc:
        raise ApiError(422, "ledger_invalid", "the body is not UTF-8 text") from exc
    result = await ledger.upsert_entries(daemon, tenant, account["id"], entries, actor_of(request))
    return json_response(result, status=200)


# --- runs ----------------------------------------------------------------------------------------------


async def start_run(request):
    tenant, account = await account_of(request)
    run = await runs.run_account(daemon_of(request), tenant, account, "api", actor_of(request))
    return json_response(present.run(run), status=201)


async def _run_of(request, tenant: str, account: dict) -> dict:
    run_id = request.match_info["run"]
    return found(await store.get_run(daemon_of(request).db, tenant, account["id"], run_id), f"run {run_id}")


async def get_run(request):
    tenant, account = await account_of(request)
    return json_response(present.run(await _run_of(request, tenant, account)))


async def _matches_page(request, load, show, statuses: tuple[str, ...], default: str | None, run: bool):
    """A page of matches or suggestions (``load``, shown with ``show``) of the account, or of one run when ``run``.

    ``?status=`` is one of ``statuses``, else ``default``; "all" or None means every status.
    """
    tenant, account = await account_of(request)
    run_id = (await _run_of(request, tenant, account))["id"] if run else None  # 404 for an unknown run
    limit, cursor = page_params(request)
    status = query_choice(request, "status", statuses) or default
    items = await load(
        daemon_of(request).db,
        tenant,
        account["id"],
        run_id=run_id,
        status=None if status == "all" else status,
        limit=limit + 1,
        after=cursor,
    )
    return json_response(page([show(m) for m in items], limit, cursor_of=lambda m: m["id"]))


MATCH_STATUSES = ("active", "undone")
SUGGESTION_STATUSES = ("open", "accepted", "stale", "all")


async def run_matches(request):
    return await _matches_page(request, store.list_matches, present.match, MATCH_STATUSES, None, run=True)


async def run_suggestions(request):
    return await _matches_page(
        request, store.list_suggestions, present.suggestion, SUGGESTION_STATUSES, "open", run=True
    )


async def list_matches(request):
    return await _matches_page(request, store.list_matches, present.match, MATCH_STATUSES, "active", run=False)


async def list_suggestions(request):
    return await _matches_page(
        request, store.list_suggestions, present.suggestion, SUGGESTION_STATUSES, "open", run=False
    )


# --- open items -------------------------------------------------------------------------------------------


async def open_items(request: web.Request) -> web.Response:
    """Both sides' open items, oldest first, with their age in days.

    ``?side=bank|ledger|all``, ``?min_age_days=``, ``?limit=`` (per side);
    the totals count every open item that passes the filter.
    """
    tenant, account = await account_of(request)
    daemon = daemon_of(request)
    side = query_choice(request, "side", ("all", "bank", "ledger")) or "all"
    min_age = int_param(request, "min_age_days", 0, 0, 100000)
    limit = int_param(request, "limit", 1000, 1, 10000)
    today = daemon.clock.now().date()
    out: dict = {"as_of": today.isoformat()}
    try:
        # At least min_age days old: dated that many days before today or earlier.
        booked_by = (today - dt.timedelta(days=min_age)).isoformat()
    except OverflowError:
        booked_by = None  # before 0001-01-01: no item is that old
    sides = [
        ("statement_lines", "bank", present.line, "booking_date"),
        ("ledger_entries", "ledger", present.entry, "date"),
    ]
    for key, name, public, date_key in sides:
        if side not in ("all", name):
            continue
        rows: list[dict] = []
        total = 0
        if booked_by is not None:
            rows, total = await store.open_page(daemon.db, tenant, account["id"], name, booked_by, limit)
        out[key] = [public(r) | {"age_days": runs.age_days(r[date_key], today)} for r in rows]
        out[key + "_total"] = total
    return json_response(out)


async def item_candidates(request: web.Request) -> web.Response:
    """Why an open item is still open: its closest candidates, each with why it was not taken."""
    tenant, account = await account_of(request)
    side = query_choice(request, "side", ("bank", "ledger")) or "bank"
    limit = int_param(request, "limit", 5, 1, 20)
    item = request.match_info["item"]
    return json_response(await candidates.explain(daemon_of(request), tenant, account, side, item, limit))


async def list_imports(request):
    tenant, account = await account_of(request)
    limit, cursor = page_params(request)
    rows = await store.list_imports(daemon_of(request).db, tenant, account["id"], limit + 1, cursor)
    return json_response(page([present.statement_import(r) for r in rows], limit, cursor_of=lambda r: r["id"]))


# --- people ------------------------------------------------------------------------------------------------


#: Items one manual match may name per side.
MAX_MATCH_ITEMS = 1000
#: Item ids are SQLite integers (64-bit, from 1).
MAX_ITEM_ID = 2**63 - 1
_IDS = List(
    Int(min=1, max=MAX_ITEM_ID),
    max_len=MAX_MATCH_ITEMS,
    unique=True,
    nullable=True,
    doc="item ids of the account (from open-items)",
)
MATCH_BODY = Obj(
    {
        "statement_line_ids": _IDS,
        "ledger_entry_ids": _IDS,
        "adjustment": DecimalField(default="0", doc="bank total minus ledger total"),
        "exchange_rate": DecimalField(
            default=None, min=0, doc="account currency per unit of the ledger entries' currency, when it differs"
        ),
        "note": Str(max_len=500, default=""),
    },
    check=lambda body: (
        []
        if body["statement_line_ids"] or body["ledger_entry_ids"]
        else [((), "name at least one statement line or ledger entry")]
    ),
)


async def create_match(request):
    tenant, account = await account_of(request)
    body = body_of(request)
    match = await manual.manual_match(daemon_of(request), tenant, account, body, actor_of(request))
    return json_response(present.match(match), status=201)


async def get_match(request):
    tenant, account = await account_of(request)
    match_id = request.match_info["match"]
    return json_response(
        present.match(
            found(await store.get_match(daemon_of(request).db, tenant, account["id"], match_id), f"match {match_id}")
        )
    )


async def delete_match(request):
    tenant, account = await account_of(request)
    match = await manual.undo(daemon_of(request), tenant, account, request.match_info["match"], actor_of(request))
    return json_response(present.match(match))


async def accept_suggestion(request):
    tenant, account = await account_of(request)
    match = await manual.accept_suggestion(
        daemon_of(request), tenant, account, request.match_info["suggestion"], actor_of(request)
    )
    return json_response(present.match(match), status=201)


async def audit_log(request):
    tenant, account = await account_of(request)
    limit, cursor = page_params(request)
    rows = await store.list_audit(daemon_of(request).db, tenant, account["id"], limit + 1, int_cursor(cursor))
    return json_response(page([present.audit_entry(r) for r in rows], limit, cursor_of=lambda r: r["id"]))


async def list_aliases(request):
    tenant, account = await account_of(request)
    limit, cursor = page_params(request)
    rows = await aliases.list_aliases(daemon_of(request).db, tenant, account["id"], limit + 1, cursor)
    answer = page(rows, limit, cursor_of=aliases.cursor_of)
    return json_response(answer | {"data": [present.alias(r) for r in answer["data"]]})


async def delete_alias(request):
    tenant, account = await account_of(request)
    daemon = daemon_of(request)
    removed = await aliases.remove(
        daemon.db, tenant, account["id"], request.match_info["alias"], actor_of(request), daemon.clock.time()
    )
    return json_response(present.alias(removed))


_FILE = {"type": "string", "format": "binary"}
#: A file upload: the raw bytes, or a multipart form with a ``file`` part.
_UPLOAD = {
    "application/octet-stream": _FILE,
    "multipart/form-data": {"type": "object", "required": ["file"], "properties": {"file": _FILE}},
}
_LEDGER_BODY = {
    "type": "object",
    "required": ["entries"],
    "properties": {
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["external_id", "date", "amount"],
                "properties": {
                    "external_id": {"type": "string"},
                    "date": {"type": "string", "format": "date"},
                    "amount": {"type": "string", "example": "120.00"},
                },
            },
        }
    },
}


#: A route of :func:`routes`: method, path, handler, summary, query parameters
#: and the other fields of its :class:`Route`.
RouteSpec = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], str, dict[str, str], dict[str, Any]]


def routes() -> list[Route]:
    a = PREFIX + "/{account}"
    created = {"statuses": (201,)}
    spec: list[RouteSpec] = [
        ("GET", PREFIX, list_accounts, "List reconciliation accounts", {}, {}),
        (
            "POST",
            PREFIX,
            create_account,
            "Create a reconciliation account",
            {},
            {"body": ACCOUNT_BODY, "body_check": _known_layouts, **created},
        ),
        ("GET", a, get_account, "Get an account", {}, {}),
        (
            "POST",
            a + "/statements",
            import_statement,
            "Import a statement file (raw body or multipart)",
            {
                "format": "importer name (camt053, mt940, ofx, csv, ...); detected when absent",
                "filename": "file name to record (raw uploads)",
            },
            {"body_content": _UPLOAD, **created},
        ),
        ("GET", a + "/imports", list_imports, "Statement imports with their counts and balance checks", PAGED, {}),
        (
            "POST",
            a + "/ledger",
            post_ledger,
            "Upsert ledger entries (JSON, JSON lines or CSV)",
            {
                "format": "csv to read a CSV body (or send Content-Type text/csv)",
                "layout": "ledger_formats entry for a CSV body (default: the account's ledger_format)",
            },
            {"body_content": {"application/json": _LEDGER_BODY, "text/csv": {"type": "string"}}},
        ),
        (
            "POST",
            a + "/runs",
            start_run,
            "Run the matching rules over the open items",
            {},
            {"body": NO_BODY, **created},
        ),
        ("GET", a + "/runs/{run}", get_run, "Get a run and its counts", {}, {}),
        (
            "GET",
            a + "/runs/{run}/matches",
            run_matches,
            "Matches made by a run",
            {"status": "active or undone (default: both)", **PAGED},
            {},
        ),
        (
            "GET",
            a + "/runs/{run}/suggestions",
            run_suggestions,
            "Suggestions of a run",
            {"status": "open (default), accepted, stale or all", **PAGED},
            {},
        ),
        (
            "GET",
            a + "/open-items",
            open_items,
            "Open statement lines and ledger entries, with age",
            {
                "side": "bank, ledger or all (default)",
                "min_age_days": "only items at least this old",
                "limit": "items per side, 1..10000 (default 1000)",
            },
            {},
        ),
        (
            "GET",
            a + "/open-items/{item}/candidates",
            item_candidates,
            "Why an open item is still open: its closest candidates and why each was not taken",
            {
                "side": "bank (default) or ledger: which side the item id is of",
                "limit": "candidates, 1..20 (default 5)",
            },
            {},
        ),
        (
            "GET",
            a + "/matches",
            list_matches,
            "Matches of the account",
            {"status": "active (default) or undone", **PAGED},
            {},
        ),
        ("POST", a + "/matches", create_match, "Match items by hand", {}, {"body": MATCH_BODY, **created}),
        ("GET", a + "/matches/{match}", get_match, "Get a match with its items", {}, {}),
        ("DELETE", a + "/matches/{match}", delete_match, "Undo a match (its items become open again)", {}, {}),
        (
            "GET",
            a + "/suggestions",
            list_suggestions,
            "Suggestions for people",
            {"status": "open (default), accepted, stale or all", **PAGED},
            {},
        ),
        (
            "POST",
            a + "/suggestions/{suggestion}/accept",
            accept_suggestion,
            "Accept a suggestion as a match",
            {},
            {"body": NO_BODY, **created},
        ),
        ("GET", a + "/audit", audit_log, "Who changed what, when", PAGED, {}),
        ("GET", a + "/aliases", list_aliases, "What matches taught: which bank payer paid for whom", PAGED, {}),
        ("DELETE", a + "/aliases/{alias}", delete_alias, "Forget a learned payer", {}, {}),
    ]
    return [
        Route(method, path, handler, auth="tenant", summary=summary, tag=TAG, params=params, **extra)
        for method, path, handler, summary, params, extra in spec
    ]
