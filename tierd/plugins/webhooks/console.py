"""The webhooks pages of the web console (``/ui/webhooks``)."""

from __future__ import annotations

from pathlib import Path

from tierd.core.ui import UiSection

TEMPLATES = Path(__file__).parent / "templates" / "console"


def section(daemon) -> UiSection:
    return UiSection("webhooks", TEMPLATES, pages=[], nav=[("Webhooks", "/webhooks")])
