"""The reconciliation pages of the web console (``/ui/reconciliation``).

Every read and every change goes through the control API (``ctx.api``), as
the session's caller, so tenant walls, validation, audit and error codes are
the API's. The one exception is :func:`account_stats`: the accounts list and
the overview panel need counts per account (open items per side, waiting
suggestions, last import, last run) across every tenant for an admin, which
no route answers; it reads this plugin's own tables, scoped by the page's
tenant.

Pages:

* ``/reconciliation``: the accounts with their counts;
* ``/reconciliation/{account}?view=bank|ledger|suggestions|matches``: open bank
  lines, open ledger entries, suggestions (accept), matches (unmatch), and
  "run matching now";
* ``/reconciliation/{account}/why/{side}/{item}``: why an open item is still
  open, its candidates with reasons and facts, and a "match these" form each.
"""

from __future__ import annotations

import urllib.parse
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import web

from tierd.core.clock import iso_or_none
from tierd.core.ui import UiApiError, UiContext, UiPage, UiSection

TEMPLATES = Path(__file__).parent / "templates" / "console"
API = "/v1/reconciliation/accounts"
VIEWS = ("bank", "ledger", "suggestions", "matches")
SIDES = ("bank", "ledger")
#: Open items one page lists per side (the API's open-items has no cursor).
OPEN_LIMIT = 200
#: Matches or suggestions per page.
PAGE = 50
#: Candidates the "why" page asks for.
CANDIDATES = 10


def section(daemon) -> UiSection:
    base = "/reconciliation/{account}"
    return UiSection(
        "reconciliation",
        TEMPLATES,
        pages=[
            UiPage("GET", "/reconciliation", accounts_page),
            UiPage("GET", base, account_page),
            UiPage("POST", base + "/run", run_now),
            UiPage("POST", base + "/suggestions/{suggestion}/accept", accept_suggestion),
            UiPage("POST", base + "/matches/{match}/undo", unmatch),
            UiPage("GET", base + "/why/{side}/{item}", why_page),
            UiPage("POST", base + "/match", match_by_hand),
        ],
        nav=[("Reconciliation", "/reconciliation")],
        overview=overview_panel,
    )


# --- helpers ---------------------------------------------------------------------------------------


def _q(value: str) -> str:
    """A path segment, quoted (ids come from the URL)."""
    return urllib.parse.quote(value, safe="")


def api_path(account: str, *rest: str) -> str:
    """The API path of an account (and what lies under it)."""
    return "/".join([API, _q(account), *rest])


def page_path(account: str, *rest: str) -> str:
    """The console path (under ``/ui``) of an account's page."""
    return "/".join(["/reconciliation", _q(account), *rest])


async def account_stats(ctx: UiContext, account: str | None = None) -> list[dict[str, Any]]:
    """Per account of the page's tenant (every tenant for an admin viewing all): name,
    currency, open items per side, open suggestions, the last import and the last run.

    Each count walks an index of its table (open items: tenant, account, match_id).
    """
    tenant = ctx.tenant
    if tenant is None and not ctx.caller.admin:
        return []  # a session without a tenant that is not the admin's sees nothing
    where, params = "", []
    if tenant is not None:
        where, params = " WHERE a.tenant_id=?", [tenant]
    if account is not None:
        where += (" AND" if where else " WHERE") + " a.id=?"
        params.append(account)
    same = "x.tenant_id=a.tenant_id AND x.account_id=a.id"
    rows = await ctx.daemon.db.fetchall(
        "SELECT a.tenant_id AS tenant, a.id, a.name, a.currency,"
        f" (SELECT COUNT(*) FROM recon_bank_lines x WHERE {same} AND x.match_id IS NULL) AS open_bank,"
        f" (SELECT COUNT(*) FROM recon_ledger_entries x WHERE {same} AND x.match_id IS NULL) AS open_ledger,"
        f" (SELECT COUNT(*) FROM recon_suggestions x WHERE {same} AND x.status='open') AS suggestions,"
        f" (SELECT MAX(x.created_at) FROM recon_imports x WHERE {same}) AS last_import,"
        f" (SELECT x.id || ' ' || x.status || ' ' || x.started_at FROM recon_runs x WHERE {same}"
        "   ORDER BY x.started_at DESC LIMIT 1) AS last_run"
        f" FROM recon_accounts a{where} ORDER BY a.tenant_id, a.id",
        params,
    )
    out = []
    for r in rows:
        row = dict(r) | {"last_import": iso_or_none(r["last_import"]), "last_run": None}
        if r["last_run"]:
            run_id, status, started = r["last_run"].split(" ", 2)
            row["last_run"] = {"id": run_id, "status": status, "started_at": iso_or_none(float(started))}
        out.append(row)
    return out


async def _to_tenant(ctx: UiContext, account_id: str) -> web.Response | None:
    """For an admin viewing all tenants: this page again for the tenant that has the account
    (the API acts for one tenant); None when the page has its tenant already."""
    if ctx.tenant is not None or not ctx.caller.admin:
        return None
    owners = [r["tenant"] for r in await account_stats(ctx, account_id)]
    if not owners:
        raise UiApiError(404, "not_found", f"no reconciliation account {account_id!r}")
    if len(owners) > 1:
        raise UiApiError(
            400, "tenant_required", f"tenants {', '.join(owners)} each have an account {account_id!r}: pick one"
        )
    query = dict(ctx.query) | {"tenant": owners[0]}
    return ctx.redirect(ctx.request.rel_url.raw_path.removeprefix("/ui"), **query)


def _tenant_link(ctx: UiContext, row: dict) -> str | None:
    """The tenant to carry in a link to an account: the row's when the admin views all tenants."""
    return row["tenant"] if ctx.tenant is None else None


def _redirect_to(ctx: UiContext, path: str, **flash: Any) -> web.Response:
    """See-other to ``path`` (which may carry its own query), keeping the admin's tenant."""
    base, _, query = path.partition("?")
    return ctx.redirect(base, **flash, **dict(urllib.parse.parse_qsl(query)))


# --- pages -----------------------------------------------------------------------------------------


async def accounts_page(ctx: UiContext) -> web.StreamResponse:
    rows = await account_stats(ctx)
    for row in rows:
        row["href"] = ctx.url(page_path(row["id"]), tenant=_tenant_link(ctx, row))
    return ctx.render("reconciliation/accounts.html", accounts=rows)


async def account_page(ctx: UiContext) -> web.StreamResponse:
    account_id = ctx.match["account"]
    if moved := await _to_tenant(ctx, account_id):
        return moved
    account = await ctx.api("GET", api_path(account_id))  # 404 for an unknown or another tenant's account
    view = ctx.query.get("view", "bank")
    if view not in VIEWS:
        view = "bank"
    [stats] = await account_stats(ctx, account_id) or [{}]
    values: dict[str, Any] = {"account": account, "view": view, "stats": stats, "answer": {}}
    if view in SIDES:
        answer = await ctx.api("GET", api_path(account_id, "open-items"), {"side": view, "limit": OPEN_LIMIT})
        key = "statement_lines" if view == "bank" else "ledger_entries"
        values |= {"items": answer[key], "total": answer[key + "_total"], "as_of": answer["as_of"]}
    else:
        query = {"limit": PAGE, "cursor": ctx.query.get("cursor")}
        values["answer"] = await ctx.api("GET", api_path(account_id, view), query)
        values["items"] = values["answer"]["data"]
    values["base"] = page_path(account_id)
    return ctx.render("reconciliation/account.html", **values)


async def run_now(ctx: UiContext) -> web.StreamResponse:
    account = ctx.match["account"]
    try:
        run = await ctx.api("POST", api_path(account, "runs"))
    except UiApiError as exc:
        if exc.status == 404:
            raise
        return ctx.redirect(page_path(account), error=f"Run refused: {exc.message}")
    c = run["counts"]
    if run["status"] != "completed":
        return ctx.redirect(page_path(account), error=f"Run {run['id']} {run['status']}: {run.get('error') or ''}")
    text = (
        f"Run {run['id']} completed: {c.get('matches', 0)} matched, {c.get('suggestions', 0)} suggested; "
        f"{c.get('bank_lines_open', 0)} bank lines and {c.get('ledger_entries_open', 0)} ledger entries open."
    )
    return ctx.redirect(page_path(account), flash=text)


async def accept_suggestion(ctx: UiContext) -> web.StreamResponse:
    account, suggestion = ctx.match["account"], ctx.match["suggestion"]
    try:
        match = await ctx.api("POST", api_path(account, "suggestions", _q(suggestion), "accept"))
    except UiApiError as exc:
        return await _refused(ctx, exc, account, "suggestions")
    return ctx.redirect(
        page_path(account), flash=f"Suggestion accepted: match {match['id']} ({match['rule']}).", view="matches"
    )


async def unmatch(ctx: UiContext) -> web.StreamResponse:
    account, match = ctx.match["account"], ctx.match["match"]
    try:
        undone = await ctx.api("DELETE", api_path(account, "matches", _q(match)))
    except UiApiError as exc:
        return await _refused(ctx, exc, account, "matches")
    n = len(undone["statement_lines"]) + len(undone["ledger_entries"])
    return ctx.redirect(page_path(account), flash=f"Match {undone['id']} undone: {n} items are open again.")


async def _refused(ctx: UiContext, exc: UiApiError, account: str, view: str) -> web.Response:
    """An API refusal of an action: a flash on the account's page, or its error page when the
    account itself is not there (another tenant's, or none)."""
    if exc.code == "not_found" and "account" in exc.message:
        raise exc
    return ctx.redirect(page_path(account), error=f"{exc.message} ({exc.code})", view=view)


async def why_page(ctx: UiContext) -> web.StreamResponse:
    account_id, side, item = ctx.match["account"], ctx.match["side"], ctx.match["item"]
    if side not in SIDES:
        raise UiApiError(404, "not_found", "the side is bank or ledger")
    if moved := await _to_tenant(ctx, account_id):
        return moved
    account = await ctx.api("GET", api_path(account_id))
    answer = await ctx.api(
        "GET", api_path(account_id, "open-items", _q(item), "candidates"), {"side": side, "limit": CANDIDATES}
    )
    for candidate in answer["candidates"]:
        candidate["form"] = _match_form(account, side, answer["item"], candidate["items"])
    return ctx.render(
        "reconciliation/why.html",
        account=account,
        side=side,
        what="statement line" if side == "bank" else "ledger entry",
        answer=answer,
        base=page_path(account_id),
        ask_rate=ctx.query.get("ask_rate") == "1",
    )


def _match_form(account: dict, side: str, item: dict, others: list[dict]) -> dict[str, Any]:
    """The hidden fields of a "match these" form, the adjustment that balances it (when every
    amount is in the account's currency), and whether an exchange rate may be needed."""
    lines, entries = ([item], others) if side == "bank" else (others, [item])
    foreign = any(e["currency"] != account["currency"] for e in entries)
    adjustment = ""
    if not foreign:
        try:
            diff = sum((Decimal(x["amount"]) for x in lines), Decimal(0)) - sum(
                (Decimal(x["amount"]) for x in entries), Decimal(0)
            )
            adjustment = str(diff) if diff else ""
        except InvalidOperation:
            adjustment = ""
    return {
        "statement_line_ids": ",".join(str(x["id"]) for x in lines),
        "ledger_entry_ids": ",".join(str(x["id"]) for x in entries),
        "adjustment": adjustment,
        "foreign": foreign,
    }


def _ids(text: str) -> list[int] | None:
    """Comma-separated item ids from a form; None for none; ValueError for anything else."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return [int(p) for p in parts] if parts else None


async def match_by_hand(ctx: UiContext) -> web.StreamResponse:
    account = ctx.match["account"]
    form = await ctx.form()
    # Back to the why page the form was on (only a page of this account), else to the open items.
    back = form.get("back", "")
    if not back.startswith(page_path(account) + "/why/"):
        back = page_path(account) + "?view=bank"
    try:
        body: dict[str, Any] = {
            "statement_line_ids": _ids(form.get("statement_line_ids", "")),
            "ledger_entry_ids": _ids(form.get("ledger_entry_ids", "")),
        }
    except ValueError:
        return _redirect_to(ctx, back, error="item ids must be whole numbers separated by commas")
    for key in ("adjustment", "exchange_rate", "note"):
        if form.get(key, "").strip():
            body[key] = form[key].strip()
    try:
        match = await ctx.api("POST", api_path(account, "matches"), body=body)
    except UiApiError as exc:
        if exc.code == "not_found" and "account" in exc.message:
            raise
        if exc.code == "exchange_rate_required":
            back += ("&" if "?" in back else "?") + "ask_rate=1"
        return _redirect_to(ctx, back, error=f"{exc.message} ({exc.code})")
    return ctx.redirect(page_path(account), flash=f"Matched by hand: match {match['id']}.", view="matches")


async def overview_panel(ctx: UiContext) -> str:
    """The overview's card: per account, open items of both sides and suggestions waiting."""
    rows = await account_stats(ctx)
    for row in rows:
        row["href"] = ctx.url(page_path(row["id"]), tenant=_tenant_link(ctx, row))
    return ctx.fragment("reconciliation/overview.html", accounts=rows)
