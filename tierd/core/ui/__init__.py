"""The web console (``/ui``) and the pages plugins add to it.

Server-rendered HTML (Jinja2), a stylesheet and a little JavaScript shipped in
the package: no build step, no network. Core owns sign-in, sessions, CSRF,
the layout and the overview; each plugin contributes its pages through the
``tierd_ui`` hook, as a :class:`UiSection` whose templates sit in the plugin's
own folder.

Files:

* ``pages.py``: what a plugin declares (:class:`UiSection`, :class:`UiPage`)
  and what its handlers get (:class:`UiContext`).
* ``sessions.py``: sessions kept in the database, ended by signing out, by
  their expiry, or by revoking the token (or portal link) behind them.
* ``dispatch.py``: how a page calls the control API in-process, as its
  session's caller, so a page can show or do exactly what the API allows.
* ``app.py``: the ``/ui`` application: middleware (sessions, CSRF, HTML
  errors, security headers), sign-in and sign-out, the overview.
"""

from tierd.core.ui.pages import Principal, UiApiError, UiContext, UiPage, UiSection

__all__ = ["Principal", "UiApiError", "UiContext", "UiPage", "UiSection"]
