"""Templates: defaults per event type, sandbox, syntax errors, render fallback."""

import logging

import pytest

from tierd.core.plugins import make_plugin_manager
from tierd.core.registry import collect_registries
from tierd.plugins.notifications.templates import (
    TemplateSpec,
    check_template,
    context_for,
    render,
)

#: The event types the built-in plugins declare, with their default texts and flags.
DECLARED = collect_registries(make_plugin_manager(load_entrypoints=False)).event_types


def event(type_, data=None, tenant="acme", id_="evt_1"):
    return {"id": id_, "type": type_, "tenant": tenant, "data": data or {}, "created_at": "2026-11-28T12:00:00Z"}


@pytest.mark.parametrize(
    "type_,data,subject,body_part",
    [
        (
            "webhook.endpoint.disabled",
            {"endpoint_id": "we_1", "url": "https://x.example/hook", "reason": "410 Gone"},
            "Webhook endpoint disabled: https://x.example/hook",
            "because 410 Gone",
        ),
        (
            "reconciliation.exceptions",
            {
                "account": "acc_1",
                "run_id": "run_1",
                "count": 2,
                "max_age_days": 30,
                "items": [
                    {
                        "side": "bank",
                        "id": 7,
                        "date": "2026-10-01",
                        "amount": "-5.00",
                        "age_days": 58,
                        "reasons": ["age"],
                        "reference": "R1",
                    },
                    {
                        "side": "ledger",
                        "id": 9,
                        "date": "2026-10-02",
                        "amount": "12.00",
                        "age_days": 57,
                        "reasons": ["age"],
                        "reference": "",
                    },
                ],
            },
            "Reconciliation: 2 exception(s) on acc_1",
            "older than 30 days).\n- bank 2026-10-01 R1 -5.00, 58 days\n- ledger 2026-10-02 9 12.00, 57 days",
        ),
        (
            "reconciliation.run.completed",
            {
                "account": "acc_1",
                "run_id": "run_1",
                "trigger": "api",
                "counts": {"matches": 10, "suggestions": 2, "bank_lines_open": 3, "ledger_entries_open": 1},
            },
            "Reconciliation run completed for acc_1",
            "completed: 10 match(es), 2 suggestion(s) to review; 3 bank line(s) and 1 ledger entr(ies) still open.",
        ),
        (
            "reconciliation.statement.imported",
            {
                "account": "acc_1",
                "format": "camt053",
                "filename": "s.xml",
                "new": 42,
                "duplicates": 1,
                "rejected": 0,
                "balance_mismatches": 1,
            },
            "Statement imported for acc_1",
            "(camt053) from s.xml was imported for tenant acme: 42 new line(s), 1 duplicate(s), 0 rejected.\n"
            "Warning: 1 balance mismatch(es).",
        ),
        (
            "webhook.delivery.failed",
            {"url": "https://x.example/hook", "attempts": 8, "last_error": "HTTP 500"},
            "Webhook delivery failed: https://x.example/hook",
            "Last error: HTTP 500",
        ),
        (
            "webhook.endpoint.updated",
            {
                "endpoint_id": "ep_1",
                "url": "https://new.example/h",
                "actor": "acme/tok_1",
                "fields": ["url"],
                "previous_url": "https://x.example/hook",
            },
            "Webhook endpoint changed: https://new.example/h",
            "acme/tok_1 changed url of the webhook endpoint ep_1 of tenant acme.\n"
            "Its URL was https://x.example/hook and is now https://new.example/h",
        ),
        (
            "webhook.endpoint.secret_rotated",
            {
                "endpoint_id": "ep_1",
                "url": "https://x.example/hook",
                "actor": "admin",
                "previous_secret_valid_until": "2026-12-02T08:00:00Z",
            },
            "Webhook secret rotated: https://x.example/hook",
            "also signs until 2026-12-02T08:00:00Z.",
        ),
        (
            "webhook.endpoint.created",
            {"endpoint_id": "ep_1", "url": "https://x.example/hook", "actor": "admin"},
            "Webhook endpoint added: https://x.example/hook",
            "admin added the webhook endpoint ep_1 for tenant acme",
        ),
        (
            "webhook.endpoint.deleted",
            {"endpoint_id": "ep_1", "url": "https://x.example/hook", "actor": "admin"},
            "Webhook endpoint deleted: https://x.example/hook",
            "(https://x.example/hook) with its delivery history.",
        ),
        ("invoice.paid", {"amount": "12.50"}, "invoice.paid (acme)", '"amount": "12.50"'),
    ],
)
def test_defaults_per_event_type(type_, data, subject, body_part):
    out = render(TemplateSpec(event_types=DECLARED), context_for([event(type_, data)]))
    assert out.error == ""
    assert out.subject == subject
    assert body_part in out.body
    assert out.html is None  # no html template: the email channel derives it from the text


def test_every_builtin_type_has_defaults():
    assert {name for name, t in DECLARED.items() if t.subject and t.body} == {
        "webhook.endpoint.disabled",
        "reconciliation.exceptions",
        "reconciliation.run.completed",
        "reconciliation.statement.imported",
        "webhook.delivery.failed",
        "webhook.endpoint.blocked",
        "webhook.endpoint.unblocked",
        "webhook.endpoint.created",
        "webhook.endpoint.updated",
        "webhook.endpoint.deleted",
        "webhook.endpoint.secret_rotated",
        "report.generated",
        "report.failed",
    }


def test_defaults_survive_missing_data():
    for type_ in DECLARED:
        out = render(TemplateSpec(event_types=DECLARED), context_for([event(type_, {})]))
        assert out.error == "" and out.subject


def test_digest_default_lists_events():
    events = [event("invoice.paid", {"summary": f"#{i}"}, id_=f"evt_{i}") for i in range(60)]
    out = render(TemplateSpec(), context_for(events, {"type": "invoice.paid"}))
    assert out.subject == "60 × invoice.paid (acme)"
    lines = out.body.splitlines()
    assert lines[1] == "- 2026-11-28T12:00:00Z invoice.paid evt_0: #0"
    assert lines[2] == "- 2026-11-28T12:00:00Z invoice.paid evt_1: #1"
    assert "and 10 more" in out.body


def test_custom_templates_and_context():
    spec = TemplateSpec(
        subject="{{ count }} {{ type }} for {{ tenant }}: {{ data.amount }}",
        body="{% for e in events %}{{ e.id }} {% endfor %}via {{ route }}/{{ channel }}",
    )
    out = render(spec, context_for([event("invoice.paid", {"amount": 7})], route="r", channel="c"))
    assert (out.subject, out.body) == ("1 invoice.paid for acme: 7", "evt_1 via r/c")


def test_syntax_error_is_reported_for_check_config():
    assert check_template("{{ data.amount").startswith("template syntax error on line 1")
    assert check_template("{% for x in y %}") is not None
    assert check_template("{{ data.amount | json }}") is None


@pytest.mark.parametrize(
    "bad",
    [
        "{{ 1 / 0 }}",  # runtime error
        "{{ data.__class__.__mro__[1].__subclasses__() }}",  # sandbox violation
        "{{ data.x | nosuchfilter }}",  # unknown filter (found at compile... or render)
    ],
)
def test_render_error_falls_back_to_plain_message(bad, caplog):
    caplog.set_level(logging.WARNING)
    ctx = context_for([event("invoice.paid", {"amount": 7})])
    spec = TemplateSpec(subject=bad) if "nosuchfilter" not in bad else TemplateSpec(body=bad)
    try:
        out = render(spec, ctx)
    except Exception as exc:  # pragma: no cover
        pytest.fail(f"render raised {exc!r}")
    assert out.error.startswith("template render error")
    assert out.subject == "invoice.paid (acme)"
    assert '"amount": 7' in out.body
    assert "template render error" in caplog.text


def test_pick_prefers_route_over_channel():
    spec = TemplateSpec.pick({"subject": "route", "body": None}, {"subject": "chan", "body": "chan body"})
    assert spec == TemplateSpec(subject="route", body="chan body", html="")
