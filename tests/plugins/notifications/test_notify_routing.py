"""The routing tree: matching, first-match and continue, inheritance."""

import pytest

from tierd.core.plugins import make_plugin_manager
from tierd.core.registry import collect_registries
from tierd.core.schema import validate
from tierd.plugins.notifications.compiled import build_tree
from tierd.plugins.notifications.config import make_schema
from tierd.plugins.notifications.routing import Matcher, RoutingTree, condition_errors

#: The event types the built-in plugins declare, with their default texts and flags.
DECLARED = collect_registries(make_plugin_manager(load_entrypoints=False)).event_types


def ev(type_="invoice.paid", tenant="acme", **data):
    return {"id": "evt_1", "type": type_, "tenant": tenant, "data": data, "created_at": ""}


class Regs:  # the registries a config schema needs: just channel types
    from tierd.plugins.notifications.channels import BUILTIN

    channels = {c.type_name: c for c in BUILTIN}


def section(routes, channels=("a", "b", "c"), **extra):
    raw = {"channels": {n: {"type": "log"} for n in channels}, "routes": routes, **extra}
    clean, errors = validate(make_schema(Regs), raw)
    assert not errors, errors
    return clean


def reached(sec, event):
    return [(m.id, m.channels) for m in build_tree(sec, DECLARED).evaluate(event)]


@pytest.mark.parametrize(
    "match,event,expected",
    [
        ({"type": "invoice.*"}, ev("invoice.paid"), True),
        ({"type": "invoice.*"}, ev("invoice.line.added"), True),
        ({"type": "invoice.*"}, ev("payment.received"), False),
        ({"type": ["payment.*", "invoice.paid"]}, ev("invoice.paid"), True),
        ({"tenant": "acme"}, ev(tenant="other"), False),
        ({"tenant": ["other", "acme"]}, ev(), True),
        ({"data": {"amount": {"gt": 1000}}}, ev(amount="1000.01"), True),
        ({"data": {"amount": {"gt": 1000}}}, ev(amount=1000), False),
        ({"data": {"amount": {"gte": 1000, "lt": 2000}}}, ev(amount=1000), True),
        ({"data": {"amount": {"lte": 5}}}, ev(amount="abc"), False),
        ({"data": {"amount": {"eq": 10}}}, ev(amount="10.00"), True),
        ({"data": {"amount": {"ne": 10}}}, ev(amount=11), True),
        ({"data": {"currency": "EUR"}}, ev(currency="EUR"), True),
        ({"data": {"currency": "EUR"}}, ev(currency="USD"), False),
        ({"data": {"currency": {"in": ["EUR", "CHF"]}}}, ev(currency="CHF"), True),
        ({"data": {"currency": {"not_in": ["EUR"]}}}, ev(currency="EUR"), False),
        ({"data": {"ref": {"regex": "INV-[0-9]+"}}}, ev(ref="INV-42"), True),
        ({"data": {"ref": {"regex": "INV-[0-9]+"}}}, ev(ref="xINV-42"), False),  # full match
        ({"data": {"customer.country": "DE"}}, ev(customer={"country": "DE"}), True),
        ({"data": {"customer": {"country": "DE"}}}, ev(customer={"country": "AT"}), False),
        ({"data": {"note": {"exists": True}}}, ev(), False),
        ({"data": {"note": {"exists": False}}}, ev(), True),
        ({"data": {"missing": {"ne": 1}}}, ev(), False),  # an absent field matches no comparison
        ({}, ev(), True),
    ],
)
def test_matcher(match, event, expected):
    assert Matcher(match).matches(event) is expected


def test_first_match_wins_unless_continue():
    sec = section(
        [
            {"match": {"type": "invoice.*"}, "channels": ["a"]},
            {"match": {"type": "invoice.paid"}, "channels": ["b"]},
        ]
    )
    assert reached(sec, ev()) == [("0", ["a"])]
    sec["routes"][0]["continue"] = True
    assert reached(sec, ev()) == [("0", ["a"]), ("1", ["b"])]
    assert reached(sec, ev("payment.failed")) == []


def test_children_inherit_and_refine():
    sec = section(
        [
            {
                "name": "invoices",
                "match": {"type": "invoice.*", "tenant": "acme"},
                "channels": ["a"],
                "group_by": ["type"],
                "group_wait": "1m",
                "throttle": {"max": 5, "per": "1h"},
                "routes": [
                    {
                        "name": "big",
                        "match": {"data": {"amount": {"gt": 1000}}},
                        "channels": ["b", "c"],
                        "group_wait": "5s",
                    },
                    {"name": "eur", "match": {"data": {"currency": "EUR"}}},
                ],
            }
        ]
    )
    tree = build_tree(sec, DECLARED)
    big = tree.by_id["big"].settings
    assert big["channels"] == ["b", "c"] and big["group_wait"] == 5.0
    assert big["group_by"] == ["type"] and big["throttle"] == {"max": 5, "per": 3600.0}
    eur = tree.by_id["eur"].settings
    assert eur["channels"] == ["a"] and eur["group_wait"] == 60.0
    assert reached(sec, ev(amount=5000)) == [("big", ["b", "c"])]
    assert reached(sec, ev(amount=5, currency="EUR")) == [("eur", ["a"])]
    # The parent itself is the result when no child matches.
    assert reached(sec, ev(amount=5, currency="USD")) == [("invoices", ["a"])]
    # A child never sees what its parent did not match.
    assert reached(sec, ev(tenant="other", amount=5000)) == []
    assert [m.path for m in tree.evaluate(ev(amount=5000))] == [["invoices", "big"]]


def test_operator_alerts_route_in_one_line():
    sec = section([{"match": {"type": "*"}, "channels": ["b"]}], operator_alerts="a")
    got = reached(sec, ev("webhook.endpoint.disabled"))
    # The operator route continues: the admin's own routes still see the event.
    assert got == [("operator_alerts", ["a"]), ("0", ["b"])]
    assert reached(sec, ev("invoice.paid")) == [("0", ["b"])]
    tree = build_tree(sec, DECLARED)
    assert tree.by_id["operator_alerts"].settings["group_by"] == ["type"]


def test_config_errors_name_the_key():
    raw = {
        "channels": {
            "a": {"type": "log"},
            "m": {"type": "email", "host": "x", "from": "a@b", "to": ["c@d"], "prot": 25},
        },
        "routes": [
            {
                "channels": ["nope"],
                "subject": "{{ oops",
                "match": {"data": {"x": {"gt": 1, "lte": 2, "gtt": 1}}},
                "routes": [{"channels": ["a"], "group_wait": "soon", "mute_time_intervals": ["never"]}],
            }
        ],
        "operator_alerts": "ghost",
    }
    _, errors = validate(make_schema(Regs), raw, ("notifications",))
    text = "\n".join(map(str, errors))
    assert "notifications.channels.m.prot: unknown key 'prot' (did you mean 'port'?)" in text
    assert "notifications.routes[0].channels: unknown channel 'nope'" in text
    assert "notifications.routes[0].subject: template syntax error" in text
    assert "notifications.routes[0].match.data.x: unknown operator 'gtt' (did you mean 'gt'?)" in text
    assert "notifications.routes[0].routes[0].group_wait: invalid duration 'soon'" in text
    assert "notifications.operator_alerts: unknown channel 'ghost'" in text


def test_condition_errors():
    assert condition_errors({"x": {"regex": "("}})[0][1].startswith("invalid regex")
    assert condition_errors({"x": {"in": "a"}}) == [(("x", "in"), "expects a list")]
    assert condition_errors({"x": {"gt": "many"}}) == [(("x", "gt"), "expects a number, got 'many'")]
    assert condition_errors({"x": 1, "y": {"z": {"lt": 3}}}) == []


def test_empty_tree_routes_nothing():
    assert RoutingTree([]).evaluate(ev()) == []
