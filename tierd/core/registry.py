"""Registries third parties extend, and the contracts of what goes in them.

Core collects six registries from the ``tierd_register_*`` hooks when the
plugin manager is built (see :mod:`tierd.core.hookspecs`):

* ``event_types``: the event types a plugin publishes (:class:`EventType`)
* ``channels``: notification channel types (:class:`Channel` subclasses)
* ``statement_importers``: bank statement formats (:class:`StatementImporter`)
* ``report_sources``: rows a plugin offers to reports (:class:`ReportSource`)
* ``reports``: the reports a plugin ships (:class:`ReportDefinition`)
* ``report_exporters``: output formats (:class:`ReportExporter`)

The base classes below are the whole contract: a third-party package needs
nothing else from tierd to add an event type, a channel, a format, a report
or an exporter.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import pluggy

from tierd.core.events import TYPE_RE

if TYPE_CHECKING:
    import aiohttp


class RegistryError(Exception):
    """A plugin registered something malformed or a duplicate name."""


# --- event types ---------------------------------------------------------------

#: Severities of an event type and of a notification, lowest first.
SEVERITIES = ("info", "warning", "critical")
#: The longest event type name (the API refuses longer ones at intake too).
MAX_TYPE_LENGTH = 200


def object_schema(required: list[str], **properties: dict) -> dict:
    """The JSON Schema of an event type's ``data``: an object with these properties
    (for :class:`EventType`'s ``data_schema``)."""
    return {"type": "object", "required": required, "properties": properties}


@dataclasses.dataclass(frozen=True)
class EventType:
    """An event type a plugin publishes, declared by that plugin and no other.

    The catalogue (``GET /v1/event-types``, ``tierd events types``) lists it;
    the other plugins read what they need from it in
    ``daemon.registries.event_types`` instead of naming it: notifications
    renders its default text and severity and routes it to ``operator_alerts``
    if it is an operator alert, webhooks never sends it when ``webhook`` is
    False. Tenants' own types (``invoice.paid``) need no declaration.
    """

    #: Dotted lowercase, e.g. ``reconciliation.run.completed``.
    name: str
    #: One line saying when it is published.
    description: str
    #: JSON Schema of the event's ``data``, for the catalogue (publish does not enforce it).
    data_schema: dict | None = None
    #: Default notification subject and body: Jinja2 templates over the
    #: notification context (``data``, ``tenant``, ``event``, ...); empty: a generic text.
    subject: str = ""
    body: str = ""
    #: One of :data:`SEVERITIES`: the severity of its notifications unless a route says otherwise.
    severity: str = "info"
    #: The daemon's own alert for people: notifications' ``operator_alerts`` routes it.
    operator_alert: bool = False
    #: May be delivered to webhook endpoints. False for what a tenant must not
    #: get as a webhook (e.g. a failure an endpoint subscribed to ``*`` would feed on).
    webhook: bool = True


def event_type_problem(event_type: Any) -> str | None:
    """What is wrong with a registered event type, or None."""
    if not isinstance(event_type, EventType):
        return f"expected a tierd.core.registry.EventType, got {type(event_type).__name__}"
    name = event_type.name
    if len(name) > MAX_TYPE_LENGTH or not TYPE_RE.fullmatch(name):
        return f"name {name!r} is not a dotted lowercase event type such as 'invoice.paid'"
    description = event_type.description
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        return "description must be one non-empty line"
    for key in ("subject", "body"):
        if not isinstance(getattr(event_type, key), str):
            return f"{key} must be a string (a Jinja2 template)"
    if event_type.severity not in SEVERITIES:
        return f"severity {event_type.severity!r} is not one of {', '.join(SEVERITIES)}"
    for key in ("operator_alert", "webhook"):
        if not isinstance(getattr(event_type, key), bool):
            return f"{key} must be true or false"
    if event_type.data_schema is not None:
        if not isinstance(event_type.data_schema, dict):
            return "data_schema must be a JSON Schema (a dict) or None"
        try:  # the catalogue answers it as JSON
            json.dumps(event_type.data_schema, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return f"data_schema is not JSON: {exc}"
    return None


# --- notification channels ---------------------------------------------------


@dataclasses.dataclass
class Attachment:
    filename: str
    content: bytes
    media_type: str = "application/octet-stream"


@dataclasses.dataclass
class Message:
    """What a channel sends: rendered text plus the facts it came from."""

    subject: str
    body: str
    html: str | None = None
    attachments: list[Attachment] = dataclasses.field(default_factory=list)
    #: "info", "warning" or "critical"; channels map it to their own notion.
    severity: str = "info"
    #: The events this message is about (one, or several for a digest).
    events: list[dict] = dataclasses.field(default_factory=list)
    #: Stable id of this notification, for receivers that de-duplicate.
    id: str = ""


@dataclasses.dataclass
class SendResult:
    """Outcome of one send attempt."""

    outcome: str  # "delivered" | "retry" | "failed"
    detail: str = ""
    #: For "retry": seconds the remote asked us to wait (e.g. Retry-After).
    retry_after: float | None = None

    @classmethod
    def delivered(cls, detail: str = "") -> SendResult:
        return cls("delivered", detail)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> SendResult:
        return cls("retry", detail, retry_after)

    @classmethod
    def failed(cls, detail: str) -> SendResult:
        return cls("failed", detail)


class Channel:
    """A notification channel type. Subclass it and register the class.

    ``schema`` is a :mod:`tierd.core.schema` ``Obj`` for the instance's
    configuration (without the ``type`` key, which core adds). An instance
    is created per configured channel with its validated config dict and a
    shared ``aiohttp.ClientSession`` (``self.http``).
    """

    type_name: ClassVar[str] = ""
    schema: ClassVar[Any] = None

    def __init__(self, name: str, config: dict, http: aiohttp.ClientSession | None = None) -> None:
        self.name = name
        self.config = config
        self.http = http

    async def send(self, message: Message) -> SendResult:  # pragma: no cover
        raise NotImplementedError

    async def close(self) -> None:
        """Release resources (connections). Called on shutdown and reload."""


# --- bank statements ------------------------------------------------------------


class StatementError(ValueError):
    """A statement file is malformed. ``location`` names the line or element."""

    def __init__(self, message: str, location: str | None = None) -> None:
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


@dataclasses.dataclass
class StatementLine:
    booking_date: dt.date
    amount: Decimal  # signed: credit > 0, debit < 0
    currency: str
    value_date: dt.date | None = None
    counterparty_name: str = ""
    counterparty_account: str = ""
    remittance: str = ""
    end_to_end_id: str = ""
    bank_reference: str = ""
    #: A payment instructed in another currency than the account's: what the
    #: payer sent (CAMT ``AmtDtls/InstdAmt``, OFX ``ORIGCURRENCY``/``CURRENCY``,
    #: MT940 ``/OCMT/``), and the rate the bank applied, as booked currency
    #: per unit of the instructed one (``amount ≈ instructed_amount × rate``).
    #: ``None``/empty when the bank says nothing about it.
    instructed_amount: Decimal | None = None
    instructed_currency: str = ""
    exchange_rate: Decimal | None = None
    #: The source text of this line (an XML fragment, the MT940 :61:/:86:
    #: block, the CSV row), kept so a person can check what the bank said.
    raw: str = ""
    #: Where in the file it was (e.g. "line 12" or an XPath), for errors.
    location: str = ""


@dataclasses.dataclass
class Statement:
    lines: list[StatementLine]
    account: str = ""  # IBAN or account number, if the format says
    currency: str = ""
    statement_id: str = ""
    opening_balance: Decimal | None = None
    closing_balance: Decimal | None = None
    opening_date: dt.date | None = None
    closing_date: dt.date | None = None


class StatementImporter:
    """A statement format. Register an instance."""

    format_name: str = ""
    #: Human description for `tierd plugins` and the API.
    description: str = ""

    def detect(self, head: bytes, filename: str = "") -> bool:
        """True if ``head`` (the first 4 KiB of a file) looks like this format."""
        return False

    def parse(self, data: bytes, options: dict | None = None) -> list[Statement]:
        """Parse a whole file. Raise :class:`StatementError` on bad input."""
        raise NotImplementedError


# --- reports ------------------------------------------------------------------

#: The types a report column may have (how exporters write its cells).
COLUMN_TYPES = ("text", "integer", "decimal", "instant", "date", "boolean")
#: A source's or a report's name: dotted lowercase words (``webhooks.deliveries``).
REPORT_NAME_RE = TYPE_RE


@dataclasses.dataclass(frozen=True)
class Column:
    """A typed column of a report source or of a report's result.

    ``type`` is one of :data:`COLUMN_TYPES`: ``decimal`` values are text
    holding a decimal number (money, never a float), ``instant`` unix seconds
    (UTC), ``date`` ISO ``YYYY-MM-DD`` text, ``boolean`` 0 or 1.
    """

    name: str
    type: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class ReportSource:
    """Rows a plugin offers to reports, declared by the plugin that owns them.

    ``sql`` is one SELECT without parameters over the plugin's own tables
    whose result has a ``tenant`` column (the tenant each row belongs to) and
    every column of ``columns``; reports wrap it as a subquery and never name
    the plugin's tables. Keep it a plain projection (joins allowed): the
    report's filters must reach the tables' indexes through it.
    """

    name: str
    description: str
    sql: str
    columns: tuple[Column, ...]


@dataclasses.dataclass(frozen=True)
class ReportDefinition:
    """A report a plugin ships, in the form of ``reports.definitions.NAME`` of
    the configuration (``title``, ``source``, ``columns``, ``filters``,
    ``group_by``, ``order_by``, ``parameters``, ``chart``...): the reports
    plugin checks and compiles it like one written by an admin."""

    name: str
    spec: dict[str, Any]


@dataclasses.dataclass
class ReportData:
    """One report's result as an exporter receives it.

    ``rows`` is an iterator over tuples in ``columns``' order, read from the
    database while the exporter writes: go through it once, and do not keep
    the rows (memory must not grow with their number).
    """

    name: str
    title: str
    description: str
    #: The tenant the rows belong to, or None for a report across tenants.
    tenant: str | None
    #: The parameters the report ran with, as given (dates as ISO text).
    params: dict[str, Any]
    #: Unix seconds.
    generated_at: float
    columns: list[Column]
    rows: Iterator[tuple]
    #: ``{"type": "line"|"bar", "x": column, "y": [columns]}`` or None.
    chart: dict[str, Any] | None = None


class ReportExporter:
    """An output format for reports. Register an instance.

    ``export`` runs in a worker thread, never on the event loop: it may block.
    It writes to the binary file ``out``; an exporter with ``many`` set takes
    several reports into one file (an XLSX workbook, one sheet each); others
    are given exactly one.
    """

    format_name: str = ""
    description: str = ""
    media_type: str = "application/octet-stream"
    extension: str = ""
    many: bool = False

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:  # pragma: no cover
        raise NotImplementedError


# --- collection ---------------------------------------------------------------


def report_source_problem(source: ReportSource) -> str | None:
    """What is wrong with a report source, or None."""
    if not REPORT_NAME_RE.fullmatch(source.name):
        return "the name is not dotted lowercase words (e.g. webhooks.deliveries)"
    if not source.sql.lstrip().upper().startswith(("SELECT", "WITH")):
        return "sql is not a SELECT"
    names = [c.name for c in source.columns]
    if not names or len(set(names)) != len(names):
        return "columns are missing or repeated"
    for column in source.columns:
        if column.type not in COLUMN_TYPES:
            return f"column {column.name!r} has type {column.type!r}, not one of {', '.join(COLUMN_TYPES)}"
        if not column.name.isidentifier() or not column.name.islower():
            return f"column name {column.name!r} is not a lowercase identifier"
    return None


def report_definition_problem(report: ReportDefinition) -> str | None:
    """What is wrong with a shipped report's name or shape, or None (its
    content is the reports plugin's to check)."""
    if not REPORT_NAME_RE.fullmatch(report.name):
        return "the name is not lowercase words (e.g. webhook_deliveries)"
    return None if isinstance(report.spec, dict) else "spec is not a mapping"


#: kind -> (hook, attribute naming an entry, check returning a problem or None).
_KINDS: dict[str, tuple[str, str, Callable[[Any], str | None] | None]] = {
    "event_types": ("tierd_register_event_types", "name", event_type_problem),
    "channels": ("tierd_register_channels", "type_name", None),
    "statement_importers": ("tierd_register_statement_importers", "format_name", None),
    "report_sources": ("tierd_register_report_sources", "name", report_source_problem),
    "reports": ("tierd_register_reports", "name", report_definition_problem),
    "report_exporters": ("tierd_register_report_exporters", "format_name", None),
}


@dataclasses.dataclass
class Registries:
    event_types: dict[str, EventType] = dataclasses.field(default_factory=dict)
    channels: dict[str, type[Channel]] = dataclasses.field(default_factory=dict)
    statement_importers: dict[str, StatementImporter] = dataclasses.field(default_factory=dict)
    report_sources: dict[str, ReportSource] = dataclasses.field(default_factory=dict)
    reports: dict[str, ReportDefinition] = dataclasses.field(default_factory=dict)
    report_exporters: dict[str, ReportExporter] = dataclasses.field(default_factory=dict)
    #: name -> plugin name that registered it, for `tierd plugins`.
    origins: dict[str, str] = dataclasses.field(default_factory=dict)


def collect_registries(pm: pluggy.PluginManager) -> Registries:
    """Call every ``tierd_register_*`` hook and validate what comes back."""
    regs = Registries()
    for kind, (hook_name, key_attr, check) in _KINDS.items():
        target = getattr(regs, kind)
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name

            def register(
                obj: Any,
                _target: dict[str, Any] = target,
                _kind: str = kind,
                _plugin: str = plugin_name,
                _key: str = key_attr,
                _check: Callable[[Any], str | None] | None = check,
            ) -> None:
                name = getattr(obj, _key, "")
                if not name or not isinstance(name, str):
                    raise RegistryError(f"plugin {_plugin!r} registered a {_kind} entry without {_key}")
                if _check is not None and (problem := _check(obj)):
                    raise RegistryError(f"plugin {_plugin!r} registered {_kind} {name!r}: {problem}")
                if name in _target:
                    raise RegistryError(
                        f"plugin {_plugin!r} registered {_kind} {name!r}, "
                        f"already registered by {regs.origins.get(_kind + ':' + name)!r}"
                    )
                _target[name] = obj
                regs.origins[_kind + ":" + name] = _plugin

            impl.function(**{a: register for a in impl.argnames})
    return regs
