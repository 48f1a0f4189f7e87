"""What a plugin declares for the console, and what its page handlers get.

A plugin returns a :class:`UiSection` from the ``tierd_ui`` hook: its pages,
the folder of its templates (rendered as ``<section name>/<file>``), its
entries in the top navigation, and optionally a panel for the overview and
kinds of session of its own (the webhooks portal's links).

A handler is ``async def handler(ctx: UiContext) -> web.StreamResponse``. It
reads and acts through :meth:`UiContext.api`, the control API called
in-process as the session's caller: the page sees exactly what that caller
may see through the API, with the same validation, errors and audit. Every
POST reaching a handler has passed the CSRF check.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tierd.core.api import Caller

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon
    from tierd.core.ui.app import Console

#: ``console``: signed in with a token (admin or tenant); ``portal``: through a
#: portal link; ``public``: anyone (a sign-in page). A session of one audience
#: never opens a page of another.
AUDIENCES = ("console", "portal", "public")


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a session is: its kind (``admin``, ``tenant`` or a plugin's, e.g.
    ``portal``), the API caller it acts as, a label to show, and what a
    plugin's kind of session is limited to (``scope``, e.g. a customer)."""

    kind: str
    caller: Caller
    label: str
    scope: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def audience(self) -> str:
        return "console" if self.kind in ("admin", "tenant") else "portal"


#: A plugin's kind of session: its subject (e.g. a portal link's id) -> the
#: principal it is now, or None once it has ended (revoked, expired).
SessionKind = Callable[["Daemon", str], Awaitable[Principal | None]]


@dataclasses.dataclass
class UiPage:
    """One page: ``method`` and ``path`` under ``/ui`` (aiohttp's syntax, e.g.
    ``/webhooks/{id}``), the handler, and who may open it."""

    method: str
    path: str
    handler: Callable[[UiContext], Awaitable[web.StreamResponse]]
    audience: str = "console"

    def __post_init__(self) -> None:
        if self.audience not in AUDIENCES:
            raise ValueError(f"UiPage {self.path}: audience must be one of {', '.join(AUDIENCES)}")


@dataclasses.dataclass
class UiSection:
    """A plugin's part of the console."""

    name: str
    templates: Path
    pages: list[UiPage]
    #: (label, path) entries in the console's top navigation.
    nav: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: Renders this section's panel of the overview (HTML), or None.
    overview: Callable[[UiContext], Awaitable[str]] | None = None
    #: Kinds of session this plugin issues, by name (see :data:`SessionKind`).
    session_kinds: dict[str, SessionKind] = dataclasses.field(default_factory=dict)


class UiApiError(Exception):
    """The control API refused what a page asked, with its status, code and message."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class UiContext:
    """What a page handler works with: the request, the session, the API."""

    def __init__(self, console: Console, request: web.Request, principal: Principal | None, csrf: str) -> None:
        self.console = console
        self.request = request
        self.principal = principal
        self.csrf = csrf
        self._form: dict[str, str] | None = None
        #: Every tenant's name, for an admin's tenant picker (filled for admin sessions).
        self.tenants: list[str] = []
        self._cookies: list[tuple[str, str, dict]] = []

    @property
    def daemon(self) -> Daemon:
        return self.console.daemon

    @property
    def match(self) -> Mapping[str, str]:
        """The path's parameters (``{id}`` ...)."""
        return self.request.match_info

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    @property
    def tenant(self) -> str | None:
        """The tenant the page shows: the session's, or the one an admin picked (None: all)."""
        return self.principal.caller.tenant if self.principal else None

    @property
    def caller(self) -> Caller:
        if self.principal is None:
            raise UiApiError(401, "unauthorized", "sign in first")
        return self.principal.caller

    async def api(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        tenant: str | None = None,
    ) -> Any:
        """Call the control API in-process as this session's caller and answer
        its JSON; :class:`UiApiError` with the API's code when it refuses. A
        route that answers a file (a download) gives the response itself.

        ``tenant``: an admin acts for this tenant (as the ``Tierd-Tenant``
        header does), e.g. on a row of a list of every tenant's; any other
        session may only name its own."""
        caller = self.caller
        if tenant is not None and tenant != caller.tenant:
            if not caller.admin:
                raise UiApiError(404, "not_found", "no such page for your tenant")
            caller = dataclasses.replace(caller, tenant=tenant)
        return await self.console.dispatch(self, caller, method, path, query, body)

    async def form(self) -> dict[str, str]:
        """The posted form's fields (the CSRF check has already passed)."""
        if self._form is None:
            posted = await self.request.post()
            self._form = {k: v for k, v in posted.items() if isinstance(v, str)}
        return self._form

    def url(self, path: str, **query: Any) -> str:
        """``/ui`` + path, keeping the tenant an admin picked; None values are left out."""
        if self.principal and self.principal.kind == "admin" and self.tenant and "tenant" not in query:
            query["tenant"] = self.tenant
        pairs = {k: v for k, v in query.items() if v is not None and v != ""}
        return "/ui" + path + ("?" + urllib.parse.urlencode(pairs) if pairs else "")

    def page_url(self, cursor: str) -> str:
        """This page again, one page further (``cursor``: the API's next_cursor)."""
        query = dict(self.request.query) | {"cursor": cursor}
        return self.request.path + "?" + urllib.parse.urlencode(query)

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        """The template (``<section>/<file>.html``) rendered as the page."""
        return self.console.render(self, template, status, values)

    def fragment(self, template: str, **values: Any) -> str:
        """A template rendered as a piece of a page (an overview panel), with
        ``ctx``, ``csrf`` and ``principal`` at hand as in a page."""
        return self.console.env.get_template(template).render(
            ctx=self, csrf=self.csrf, principal=self.principal, **values
        )

    def redirect(self, path: str, flash: str | None = None, error: str | None = None, **query: Any) -> web.Response:
        """See-other to a console page, with a message shown there once."""
        response = web.Response(status=303, headers={"Location": self.url(path, **query)})
        if flash or error:
            self.console.set_flash(response, ("error:" + error) if error else ("ok:" + (flash or "")))
        return response
