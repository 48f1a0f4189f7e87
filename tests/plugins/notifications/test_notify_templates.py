"""Templates: defaults per event type, sandbox, syntax errors, render fallback."""

import logging

import pytest

from tierd.plugins.notifications.templates import (
    DEFAULTS, TemplateSpec, check_template, context_for, render,
)


def event(type_, data=None, tenant="acme", id_="evt_1"):
    return {"id": id_, "type": type_, "tenant": tenant, "data": data or {}, "created_at": "2026-11-28T12:00:00Z"}


@pytest.mark.parametrize("type_,data,subject,body_part", [
    ("webhook.endpoint.disabled", {"endpoint_id": "we_1", "url": "https://x.example/hook", "reason": "410 Gone"},
     "Webhook endpoint disabled: https://x.example/hook", "because 410 Gone"),
    ("reconciliation.exceptions", {"count": 3, "account": "CH93", "items": [{"reference": "R1", "amount": "5.00",
                                                                              "currency": "CHF"}]},
     "Reconciliation: 3 exception(s) on CH93", "- R1 5.00 CHF"),
    ("reconciliation.run.completed", {"run_id": "run_1", "matched": 10, "unmatched": 2},
     "Reconciliation run completed", "10 matched, 2 open"),
    ("reconciliation.statement.imported", {"format": "camt053", "lines": 42, "account": "CH93"},
     "Statement imported for CH93", "42 line(s)"),
    ("webhook.delivery.failed", {"url": "https://x.example/hook", "attempts": 8, "last_error": "HTTP 500"},
     "Webhook delivery failed: https://x.example/hook", "Last error: HTTP 500"),
    ("invoice.paid", {"amount": "12.50"}, "invoice.paid (acme)", '"amount": "12.50"'),
])
def test_defaults_per_event_type(type_, data, subject, body_part):
    out = render(TemplateSpec(), context_for([event(type_, data)]))
    assert out.error == ""
    assert out.subject == subject
    assert body_part in out.body
    assert out.html is None  # no html template: the email channel derives it from the text


def test_every_builtin_type_has_defaults():
    assert set(DEFAULTS) == {"webhook.endpoint.disabled", "reconciliation.exceptions", "reconciliation.run.completed",
                             "reconciliation.statement.imported", "webhook.delivery.failed"}


def test_defaults_survive_missing_data():
    for type_ in DEFAULTS:
        out = render(TemplateSpec(), context_for([event(type_, {})]))
        assert out.error == "" and out.subject


def test_digest_default_lists_events():
    events = [event("invoice.paid", {"summary": f"#{i}"}, id_=f"evt_{i}") for i in range(60)]
    out = render(TemplateSpec(), context_for(events, {"type": "invoice.paid"}))
    assert out.subject == "60 × invoice.paid (acme)"
    assert "- 2026-11-28T12:00:00Z invoice.paid evt_0: #0" in out.body
    assert "and 10 more" in out.body


def test_custom_templates_and_context():
    spec = TemplateSpec(subject="{{ count }} {{ type }} for {{ tenant }}: {{ data.amount }}",
                        body="{% for e in events %}{{ e.id }} {% endfor %}via {{ route }}/{{ channel }}")
    out = render(spec, context_for([event("invoice.paid", {"amount": 7})], route="r", channel="c"))
    assert (out.subject, out.body) == ("1 invoice.paid for acme: 7", "evt_1 via r/c")


def test_syntax_error_is_reported_for_check_config():
    assert check_template("{{ data.amount") .startswith("template syntax error on line 1")
    assert check_template("{% for x in y %}") is not None
    assert check_template("{{ data.amount | json }}") is None


@pytest.mark.parametrize("bad", [
    "{{ 1 / 0 }}",                                   # runtime error
    "{{ data.__class__.__mro__[1].__subclasses__() }}",  # sandbox violation
    "{{ data.x | nosuchfilter }}",                    # unknown filter (found at compile... or render)
])
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
