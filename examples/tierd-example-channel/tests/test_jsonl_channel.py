"""The jsonl channel, tested as its author would: with tierd's harness
(``tierd.testing``), the plugin loaded by name from this folder, nothing
installed. Run ``pytest`` here, or tierd's ``make test``."""

import json

from tierd.testing import LocalDaemon, eventually


def notifications(path, **channel) -> dict:
    return {
        "notifications": {
            "channels": {"audit": {"type": "jsonl", "path": str(path), **channel}},
            "routes": [{"match": {"type": "invoice.*"}, "channels": ["audit"]}],
        }
    }


async def test_each_message_is_one_json_line(tmp_path):
    audit = tmp_path / "out" / "audit.jsonl"  # its folder is created on the first message
    async with LocalDaemon(tmp_path, notifications(audit), plugins=["tierd_example_channel"]) as d:
        await d.tenant("acme")
        first = await d.publish("acme", "invoice.paid", {"number": "INV-1"})
        await d.publish("acme", "order.created")  # not routed to the channel
        await d.publish("acme", "invoice.voided", {"number": "INV-2"})
        await eventually(lambda: audit.exists() and len(audit.read_text().splitlines()) == 2, what="two lines")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["channel"] for r in records] == ["audit", "audit"]
    assert [[e["type"] for e in r["events"]] for r in records] == [["invoice.paid"], ["invoice.voided"]]
    assert records[0]["events"][0]["id"] == first["id"] and records[0]["subject"]


async def test_events_can_be_left_out(tmp_path):
    audit = tmp_path / "audit.jsonl"
    async with LocalDaemon(
        tmp_path, notifications(audit, include_events=False), plugins=["tierd_example_channel"]
    ) as d:
        await d.tenant("acme")
        await d.publish("acme", "invoice.paid")
        await eventually(audit.exists, what="the line")
    [record] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert "events" not in record and record["subject"]


async def test_a_config_error_names_the_key(tmp_path):
    from tierd.core.config import ConfigError

    daemon = LocalDaemon(
        tmp_path, notifications(tmp_path / "x.jsonl", colour="blue"), plugins=["tierd_example_channel"]
    )
    try:
        await daemon.start()
    except ConfigError as exc:
        assert "colour" in str(exc)
    else:
        await daemon.stop()
        raise AssertionError("an unknown channel key was accepted")
