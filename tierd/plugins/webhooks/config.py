"""The ``webhooks`` config section (see ``config.example.yaml`` for a commented copy)."""

from __future__ import annotations

from tierd.core.schema import Bool, CaFile, Cidr, Duration, Int, List, Obj

#: Svix's schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]


def _check(value: dict) -> list:
    errors = []
    if (
        value.get("endpoint_max_in_flight")
        and value.get("max_in_flight")
        and value["endpoint_max_in_flight"] > value["max_in_flight"]
    ):
        errors.append((("endpoint_max_in_flight",), "must not exceed max_in_flight"))
    return errors


SCHEMA = Obj(
    {
        "retry_schedule": List(
            Duration(),
            min_len=1,
            default=DEFAULT_RETRY_SCHEDULE,
            doc="Delay before each attempt of a delivery, the first included "
            "(its length is the number of attempts); jittered by 10%",
        ),
        "timeout": Duration(
            default="15s", min="100ms", doc="An attempt that has no complete 2xx answer within this time failed"
        ),
        "max_in_flight": Int(default=200, min=1, doc="Requests in flight at once, all endpoints together"),
        "endpoint_max_in_flight": Int(default=10, min=1, doc="Requests in flight at once to one endpoint"),
        "disable_after": Duration(
            default="5d", min="1s", doc="Disable an endpoint whose deliveries have all failed for this long"
        ),
        "retention": Duration(
            default="30d", min="1h", doc="Attempts and finished deliveries older than this are pruned"
        ),
        "allow_http": Bool(default=False, doc="Accept http:// endpoint URLs (https:// only by default)"),
        "ca_file": CaFile(
            default="",
            doc="PEM file of extra CA certificates that endpoint TLS certificates may chain "
            "to (an internal CA), trusted besides the system's",
        ),
        "allow_destinations": List(
            Cidr(),
            default=[],
            doc="Networks webhooks may reach although they are not globally routable "
            "(e.g. 10.1.2.0/24); everything non-public is refused otherwise",
        ),
        "rotation_grace": Duration(
            default="24h", doc="After a secret rotation, sign with the old secret too for this long"
        ),
    },
    check=_check,
)
