"""Any of Apprise's 100+ services, when the optional ``apprise`` package is
installed (``pip install tierd[apprise]``).

Apprise reports only success or failure, not why, so a failure is treated as
transient (retried up to ``retry.max_attempts``).
"""

from __future__ import annotations

from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import List, Obj, Str

try:  # optional dependency: the type is registered only when it imports
    import apprise as _apprise
except ImportError:  # pragma: no cover - depends on the environment
    _apprise = None

AVAILABLE = _apprise is not None


class AppriseChannel(Channel):
    """Send through Apprise URLs (``mailto://``, ``tgram://``, ``json://`` ...)."""

    type_name = "apprise"
    schema = Obj(
        {
            "urls": List(Str(), required=True, doc="Apprise service URLs (secrets: use ${VAR})"),
            "tag": Str(default="", doc="Only notify URLs with this Apprise tag"),
        }
    )

    def __init__(self, name, config, http=None):
        super().__init__(name, config, http)
        self._apobj = _apprise.Apprise()
        for url in config["urls"]:
            self._apobj.add(url)

    async def send(self, message: Message) -> SendResult:
        notify_type = {"warning": _apprise.NotifyType.WARNING, "critical": _apprise.NotifyType.FAILURE}.get(
            message.severity, _apprise.NotifyType.INFO
        )
        ok = await self._apobj.async_notify(
            body=message.body or message.subject,
            title=message.subject,
            notify_type=notify_type,
            tag=self.config.get("tag") or None,
        )
        if ok:
            return SendResult.delivered(f"apprise: {len(self._apobj)} service(s)")
        return SendResult.retry("apprise reported a failure (see the daemon log for the service's error)")
