"""What flows between the stages of a delivery: the claimed delivery and the
outcome of one attempt (plain records, no behaviour)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .transform import Transform

#: A delivery's life: pending (waiting for ``due_at``) -> inflight (claimed)
#: -> succeeded | failed | back to pending with a later ``due_at``.
DELIVERY_STATUSES = ("pending", "inflight", "succeeded", "failed")


@dataclasses.dataclass
class Claimed:
    """A delivery the dispatcher took, with what it needs to send it."""

    seq: int
    id: str
    tenant_id: str
    endpoint_id: str
    event_type: str
    payload: str
    attempts: int
    created_at: float
    url: str
    headers: dict
    secrets: list[str]
    #: Its endpoint's transformation (``transform.py``): None sends the stored payload as it is.
    transform: Transform | None = dataclasses.field(default=None, kw_only=True)
    #: Its endpoint is fifo: its retries go on past the schedule (``outcome.decide``).
    fifo: bool = False


@dataclasses.dataclass
class Outcome:
    """The result of one attempt, as the dispatcher writes it back."""

    seq: int
    tenant_id: str
    endpoint_id: str
    attempted_at: float
    outcome: str  # success | http_error | timeout | connect_error | refused | gone | internal_error | transform_error
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str | None
    next_status: str  # succeeded | pending | failed
    due_at: float | None
    disable_endpoint: bool = False
    delivery_id: str = ""
    event_type: str = ""
    attempts: int = 0  # attempts made, this one included
