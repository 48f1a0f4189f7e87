"""Relative periods of a schedule, resolved on its calendar when a run is due.

A schedule says ``period: last_month`` (in ``params``, or in one report's own
parameters) rather than fixed dates: the report's ``from`` and ``to`` become that
word, which the builder resolves to the period's first and last day (both
included) with *today* being the day the run was due in the schedule's
``timezone``. The run's row keeps the resolved dates, so a run made again after
a crash covers the same days, and ``GET /v1/reports/runs/{id}`` shows them.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from .builder import RELATIVE_PERIODS

#: The relative periods a schedule may name.
PERIODS = tuple(RELATIVE_PERIODS)


def local_day(ts: float, timezone: str) -> dt.date:
    """The calendar day of the instant ``ts`` in ``timezone``."""
    return dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(timezone)).date()


def apply_period(params: dict) -> dict:
    """``params`` with its ``period`` (if any) as ``from`` and ``to``."""
    if "period" not in params:
        return dict(params)
    out = {k: v for k, v in params.items() if k != "period"}
    out["from"] = out["to"] = params["period"]
    return out
