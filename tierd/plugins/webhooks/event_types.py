"""The event types webhooks publishes, declared for the catalogue and the other plugins.

Endpoint changes made through the API are published as
``webhook.endpoint.<change>`` (an audit trail in the event log, naming who did
it); the dispatcher publishes ``webhook.endpoint.disabled`` when it gives up on
an endpoint and ``webhook.delivery.failed`` when a delivery does. None of them
is sent as a webhook but ``disabled``: a tenant knows of its own API calls, and
a failure delivered to an endpoint subscribed to ``*`` would feed on itself.
"""

from __future__ import annotations

from tierd.core.registry import EventType, object_schema

ENDPOINT_DISABLED = "webhook.endpoint.disabled"
ENDPOINT_BLOCKED = "webhook.endpoint.blocked"
ENDPOINT_UNBLOCKED = "webhook.endpoint.unblocked"
DELIVERY_FAILED = "webhook.delivery.failed"

_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}


def _change(description: str, **properties) -> dict:
    return object_schema(
        ["endpoint_id", "url", "actor"],
        endpoint_id=_STR,
        url=_STR,
        description=_STR,
        actor={**_STR, "description": description},
        **properties,
    )


_WHO = "who did it: admin, TENANT/TOKEN_ID, '... for PERSON' with a Tierd-Actor header"

EVENT_TYPES = [
    EventType(
        "webhook.endpoint.created",
        "A webhook endpoint was added through the API.",
        data_schema=_change(_WHO),
        webhook=False,
        subject="Webhook endpoint added: {{ data.url or data.endpoint_id }}",
        body="{{ data.actor or 'Someone' }} added the webhook endpoint {{ data.endpoint_id }} for tenant "
        "{{ tenant or '-' }}{% if data.url %}: {{ data.url }}{% endif %}.",
    ),
    EventType(
        "webhook.endpoint.updated",
        "A webhook endpoint's settings were changed through the API.",
        data_schema=_change(
            _WHO,
            fields={"type": "array", "items": _STR, "description": "the fields changed"},
            previous_url={**_STR, "description": "present when the URL changed"},
        ),
        webhook=False,
        subject="Webhook endpoint changed: {{ data.url or data.endpoint_id }}",
        body="{{ data.actor or 'Someone' }} changed {{ (data.fields or ['the settings']) | join(', ') }} of the "
        "webhook endpoint {{ data.endpoint_id }} of tenant {{ tenant or '-' }}."
        "{{ ('\nIts URL was ' ~ data.previous_url ~ ' and is now ' ~ data.url ~ ': events go there from now on.')"
        " if data.previous_url else '' }}",
    ),
    EventType(
        "webhook.endpoint.secret_rotated",
        "A webhook endpoint's signing secret was rotated through the API.",
        data_schema=_change(
            _WHO,
            signing={"enum": ["hmac-sha256", "ed25519"]},
            previous_secret_valid_until={
                **_STR,
                "format": "date-time",
                "description": "until when the previous secret also signs",
            },
        ),
        webhook=False,
        subject="Webhook secret rotated: {{ data.url or data.endpoint_id }}",
        body="{{ data.actor or 'Someone' }} rotated the signing secret of the webhook endpoint {{ data.endpoint_id }} "
        "of tenant {{ tenant or '-' }}{% if data.previous_secret_valid_until %}; the previous secret also signs "
        "until {{ data.previous_secret_valid_until }}{% endif %}.",
    ),
    EventType(
        "webhook.endpoint.deleted",
        "A webhook endpoint was deleted, with its delivery history, through the API.",
        data_schema=_change(_WHO),
        webhook=False,
        subject="Webhook endpoint deleted: {{ data.url or data.endpoint_id }}",
        body="{{ data.actor or 'Someone' }} deleted the webhook endpoint {{ data.endpoint_id }} of tenant "
        "{{ tenant or '-' }}{% if data.url %} ({{ data.url }}){% endif %} with its delivery history.",
    ),
    EventType(
        ENDPOINT_DISABLED,
        "tierd disabled a webhook endpoint whose deliveries kept failing (webhooks.disable_after).",
        data_schema=object_schema(
            ["endpoint_id", "url", "reason"], endpoint_id=_STR, url=_STR, reason=_STR, description=_STR
        ),
        severity="warning",
        operator_alert=True,
        subject="Webhook endpoint disabled: {{ data.url or data.endpoint_id or data.id }}",
        body="tierd disabled the webhook endpoint {{ data.endpoint_id or data.id }} of tenant "
        "{{ tenant or '-' }}{% if data.url %} ({{ data.url }}){% endif %}"
        "{% if data.reason %} because {{ data.reason }}{% endif %}.\n"
        "{% if data.failures %}Consecutive failures: {{ data.failures }}.\n{% endif %}"
        "Deliveries to it are paused until it is enabled again.",
    ),
    EventType(
        ENDPOINT_BLOCKED,
        "A fifo webhook endpoint's next delivery failed: the deliveries after it wait until it lands.",
        data_schema=object_schema(
            ["endpoint_id", "url", "delivery_id"],
            endpoint_id=_STR,
            url=_STR,
            description=_STR,
            delivery_id={**_STR, "description": "the delivery holding the others back"},
            event_type=_STR,
            error=_NULLABLE_STR,
            blocked_since={**_STR, "format": "date-time"},
        ),
        severity="warning",
        operator_alert=True,
        webhook=False,
        subject="Webhook endpoint blocked: {{ data.url or data.endpoint_id }}",
        body="The webhook endpoint {{ data.endpoint_id }} of tenant {{ tenant or '-' }}"
        "{% if data.url %} ({{ data.url }}){% endif %} delivers in order, and its delivery {{ data.delivery_id }}"
        "{% if data.event_type %} ({{ data.event_type }}){% endif %} failed"
        "{% if data.error %}: {{ data.error }}{% endif %}.\n"
        "The deliveries after it wait until it lands; tierd keeps trying it, "
        "and 'tierd webhooks retry {{ data.delivery_id }}' tries it at once.",
    ),
    EventType(
        ENDPOINT_UNBLOCKED,
        "A blocked fifo webhook endpoint flows again: the delivery that held it back finished.",
        data_schema=object_schema(
            ["endpoint_id", "url", "delivery_id"],
            endpoint_id=_STR,
            url=_STR,
            description=_STR,
            delivery_id=_STR,
            delivery_status={"enum": ["succeeded", "failed"]},
        ),
        operator_alert=True,
        webhook=False,
        subject="Webhook endpoint flows again: {{ data.url or data.endpoint_id }}",
        body="The webhook endpoint {{ data.endpoint_id }} of tenant {{ tenant or '-' }}"
        "{% if data.url %} ({{ data.url }}){% endif %} is no longer blocked: delivery {{ data.delivery_id }} "
        "{{ data.delivery_status or 'finished' }}, the deliveries after it go out in order.",
    ),
    EventType(
        DELIVERY_FAILED,
        "A webhook delivery gave up: its last attempt failed or it was not retryable.",
        data_schema=object_schema(
            ["delivery_id", "endpoint_id", "event_type", "attempts"],
            delivery_id=_STR,
            endpoint_id=_STR,
            url=_NULLABLE_STR,
            event_type=_STR,
            attempts={"type": "integer"},
            status_code={"type": ["integer", "null"]},
            error=_NULLABLE_STR,
            last_error=_NULLABLE_STR,
        ),
        severity="warning",
        operator_alert=True,
        webhook=False,
        subject="Webhook delivery failed: {{ data.url or data.endpoint_id }}",
        body="A webhook delivery for tenant {{ tenant or '-' }} failed"
        "{% if data.attempts %} after {{ data.attempts }} attempt(s){% endif %}.\n"
        "{% if data.url %}Endpoint: {{ data.url }}\n{% endif %}"
        "{% if data.event_type %}Event: {{ data.event_type }} {{ data.event_id }}\n{% endif %}"
        "{% if data.error or data.last_error %}Last error: {{ data.error or data.last_error }}\n{% endif %}",
    ),
]
