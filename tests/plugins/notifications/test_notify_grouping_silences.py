"""Group timers, time intervals and silences (pure, with explicit times)."""

import datetime as dt

from tierd.plugins.notifications import grouping
from tierd.plugins.notifications.silences import Silence, TimeIntervals, parse_hours, parse_weekdays, silenced_by

SETTINGS = {"group_wait": 30.0, "group_interval": 300.0, "repeat_interval": 3600.0}


def test_group_timers_like_alertmanager():
    t0 = 1000.0
    times = grouping.on_event(None, t0, SETTINGS)
    assert times.next_flush_at == t0 + 30
    # More events during group_wait do not move the flush.
    assert grouping.on_event(times, t0 + 20, SETTINGS).next_flush_at == t0 + 30
    flushed = grouping.on_flush(t0 + 30, SETTINGS["repeat_interval"])
    # After a digest, a new event waits for group_interval since that digest...
    assert grouping.on_event(flushed, t0 + 40, SETTINGS).next_flush_at == t0 + 330
    # ...or goes right away if group_interval already passed.
    assert grouping.on_event(flushed, t0 + 1000, SETTINGS).next_flush_at == t0 + 1000
    # A group quiet for repeat_interval is closed: the next event starts afresh.
    assert grouping.on_event(flushed, t0 + 30 + 3600, SETTINGS).next_flush_at == t0 + 3630 + 30


def test_group_labels_and_key():
    event = {"type": "invoice.paid", "tenant": "acme", "data": {"customer": {"id": 7}, "currency": "EUR"}}
    labels = grouping.group_labels(event, ["type", "tenant", "data.customer.id", "currency", "missing"])
    assert labels == {
        "type": "invoice.paid",
        "tenant": "acme",
        "data.customer.id": "7",
        "currency": "EUR",
        "missing": "",
    }
    key1 = grouping.group_key("r", "c", "acme", {"type": "x"})
    assert key1 == grouping.group_key("r", "c", "acme", {"type": "x"})
    assert key1 != grouping.group_key("r", "c", "other", {"type": "x"})  # tenants never share a digest


def test_weekdays_and_hours():
    assert parse_weekdays("monday:friday") == {0, 1, 2, 3, 4}
    assert parse_weekdays("sat-mon") == {5, 6, 0}
    assert parse_weekdays("Sunday") == {6}
    assert parse_hours("22:00-06:00") == [(1320, 1440), (0, 360)]


def test_time_intervals_mute_and_activate():
    intervals = TimeIntervals(
        {
            "business-hours": [{"weekdays": ["monday:friday"], "hours": ["09:00-17:00"], "timezone": "Europe/Zurich"}],
            "weekend": {"weekdays": ["saturday", "sunday"]},
        }
    )
    # 2026-11-27 is a Friday; 08:30 UTC is 09:30 in Zurich (CET, UTC+1).
    friday_morning = dt.datetime(2026, 11, 27, 8, 30, tzinfo=dt.UTC)
    friday_early = dt.datetime(2026, 11, 27, 7, 30, tzinfo=dt.UTC)
    saturday = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    assert intervals.inside("business-hours", friday_morning)
    assert not intervals.inside("business-hours", friday_early)
    assert intervals.mute_reason({"mute_time_intervals": ["weekend"]}, saturday) == "mute_time_interval weekend"
    assert intervals.mute_reason({"mute_time_intervals": ["weekend"]}, friday_morning) is None
    active = {"active_time_intervals": ["business-hours"]}
    assert intervals.mute_reason(active, friday_morning) is None
    assert intervals.mute_reason(active, saturday) == "outside active_time_intervals business-hours"


def test_silences_match_and_expire():
    event = {"type": "invoice.paid", "tenant": "acme", "data": {"amount": 5}}
    everyone = Silence("sil_1", None, {"type": "invoice.*"}, 100, 200)
    acme_only = Silence("sil_2", "acme", {"channel": "mail"}, 100, 200)
    other = Silence("sil_3", "other", {}, 100, 200)
    assert silenced_by([everyone], event, "r", "mail", 150) is everyone
    assert silenced_by([everyone], event, "r", "mail", 200) is None  # ended
    assert silenced_by([everyone], event, "r", "mail", 99) is None  # not started
    assert silenced_by([acme_only], event, "r", "chat", 150) is None
    assert silenced_by([acme_only], event, "r", "mail", 150) is acme_only
    assert silenced_by([other], event, "r", "mail", 150) is None  # a tenant silences only its own events
    big = Silence("sil_4", None, {"data": {"amount": {"gt": 10}}}, 0, 10**10)
    assert silenced_by([big], event, "r", "mail", 150) is None
