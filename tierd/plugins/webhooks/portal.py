"""The portal a tenant hands to its own customers (``/ui/portal``)."""

from __future__ import annotations

from pathlib import Path

from tierd.core.ui import UiSection

TEMPLATES = Path(__file__).parent / "templates" / "portal"


def section(daemon) -> UiSection:
    return UiSection("portal", TEMPLATES, pages=[])


def routes() -> list:
    return []
