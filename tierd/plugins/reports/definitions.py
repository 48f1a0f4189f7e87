"""``reports.definitions``: the admins' own reports, checked when the
configuration is read (``tierd check-config``, start, reload).

Each definition is compiled by :mod:`.builder` against the report sources
every plugin declared; an unknown source, column, function or aggregate is
an error naming file, line and key (``reports.definitions.NAME.columns[2].expr``)
with a did-you-mean, like every other configuration error.
"""

from __future__ import annotations

from typing import Any

from tierd.core.registry import REPORT_NAME_RE, Registries
from tierd.core.schema import Field, SchemaError

from .builder import DefinitionError, build_report

#: At most this many definitions (each is compiled at every check).
MAX_DEFINITIONS = 500


class Definitions(Field):
    """A mapping of report names to builder definitions, each checked against
    the registered sources (and refused if it takes a shipped report's name)."""

    type_name = "mapping of report definitions"

    def __init__(self, registries: Registries | None, **options: Any) -> None:
        options.setdefault("default", {})
        super().__init__(**options)
        self.registries = registries

    def convert(self, value: Any, path: tuple, errors: list[SchemaError]) -> Any:
        if not isinstance(value, dict):
            errors.append(SchemaError(path, str(self.mismatch(value))))
            return None
        if len(value) > MAX_DEFINITIONS:
            errors.append(SchemaError(path, f"holds at most {MAX_DEFINITIONS} definitions, got {len(value)}"))
            return None
        sources = self.registries.report_sources if self.registries is not None else {}
        shipped = self.registries.reports if self.registries is not None else {}
        origins = self.registries.origins if self.registries is not None else {}
        clean: dict[str, Any] = {}
        for name, spec in value.items():
            where = path + (name,)
            if not isinstance(name, str) or not REPORT_NAME_RE.fullmatch(name):
                errors.append(
                    SchemaError(where, "invalid key: a report name is lowercase words (e.g. weekly_failures)")
                )
                continue
            if name in shipped:
                plugin = origins.get("reports:" + name, "?")
                errors.append(
                    SchemaError(where, f"a report {name!r} is shipped by plugin {plugin!r}: choose another name")
                )
                continue
            try:
                build_report(name, spec, sources, origin="config")
            except DefinitionError as exc:
                errors.extend(SchemaError(where + e.path, e.message) for e in exc.errors)
                continue
            clean[name] = spec
        return clean

    def json_type(self) -> dict:
        return {"type": "object", "additionalProperties": {"type": "object"}}


def definitions_field(registries: Registries | None) -> Field:
    """The ``reports.definitions`` field for the reports section's schema."""
    return Definitions(
        registries,
        doc="Reports of your own: NAME: {title, source, columns, filters, group_by, order_by, parameters, chart}",
    )


__all__ = ["Definitions", "definitions_field"]
