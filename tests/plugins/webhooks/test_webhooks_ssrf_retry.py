"""The SSRF address policy, the guarded resolver (DNS rebinding) and the retry policy."""

import ipaddress
import random

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver

from tierd.core.http import parse_retry_after
from tierd.plugins.webhooks.outcome import retry_delay as next_delay
from tierd.plugins.webhooks.ssrf import AddressPolicy, DestinationRefused, GuardedResolver, find_refusal, make_connector

REFUSED = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "100.100.100.200",
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "192.0.0.8",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1",
    "2002:7f00:0001::1",
    "2002:c0a8:0101::1",
    "2001:0:4136:e378::1",
    "::127.0.0.1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address):
    policy = AddressPolicy()
    assert policy.refusal(address) is not None
    with pytest.raises(DestinationRefused, match="allow_destinations"):
        policy.check(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address):
    assert AddressPolicy().refusal(address) is None


def test_allowlist_opens_only_its_networks():
    policy = AddressPolicy([ipaddress.ip_network("127.0.0.1/32"), "10.1.0.0/16"])
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("127.0.0.2") is not None
    assert policy.refusal("10.2.0.1") is not None
    assert policy.refusal("::ffff:127.0.0.1") is None  # the mapped form of an allowed address


class FlippingResolver(AbstractResolver):
    """Answers a public address first, then loopback: DNS rebinding."""

    def __init__(self):
        self.answers = ["93.184.216.34", "127.0.0.1"]

    async def resolve(self, host, port=0, family=0):
        addr = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [{"hostname": host, "host": addr, "port": port, "family": 2, "proto": 0, "flags": 0}]

    async def close(self):
        pass


async def test_resolver_checks_every_resolution():
    resolver = GuardedResolver(AddressPolicy(), FlippingResolver())
    first = await resolver.resolve("rebind.example", 443)
    assert [r["host"] for r in first] == ["93.184.216.34"]
    with pytest.raises(DestinationRefused, match="rebind.example refused: 127.0.0.1 is loopback"):
        await resolver.resolve("rebind.example", 443)


async def test_resolver_keeps_only_allowed_addresses():
    class Mixed(FlippingResolver):
        async def resolve(self, host, port=0, family=0):
            return [
                {"hostname": host, "host": a, "port": port, "family": 2, "proto": 0, "flags": 0}
                for a in ("10.0.0.1", "8.8.8.8")
            ]

    result = await GuardedResolver(AddressPolicy(), Mixed()).resolve("mixed.example", 443)
    assert [r["host"] for r in result] == ["8.8.8.8"]


async def test_connector_refuses_literal_and_resolved_loopback():
    """The real client path: literal IPs skip the resolver, the socket factory still refuses them."""
    async with aiohttp.ClientSession(connector=make_connector(AddressPolicy(), limit=0)) as session:
        for url in ("http://127.0.0.1:9/", "http://localhost:9/", "http://[::ffff:127.0.0.1]:9/"):
            with pytest.raises(aiohttp.ClientError) as info:
                await session.get(url)
            refusal = find_refusal(info.value)
            assert refusal is not None, (url, info.value)
            assert "loopback" in str(refusal)


def test_retry_schedule_and_jitter():
    schedule = [0, 5, 300, 1800]
    rng = random.Random(1)
    assert next_delay(schedule, 0, rng=rng) == 0
    for attempts, base in ((1, 5), (2, 300), (3, 1800)):
        for _ in range(50):
            delay = next_delay(schedule, attempts, rng=rng)
            assert base * 0.9 <= delay <= base * 1.1
    assert next_delay(schedule, 4) is None


@pytest.mark.parametrize(
    "status,header,expected",
    [
        (429, "1", 300),
        (429, "450", 450),
        (503, "100000", 600),
        (502, "400", 400),
        (504, "400", 400),
    ],
)
def test_retry_after_is_clamped_between_scheduled_and_twice(status, header, expected):
    assert next_delay([0, 300], 1, status=status, retry_after=header) == expected


def test_retry_after_ignored_for_other_statuses_and_garbage():
    for status, header in ((500, "450"), (429, "soon")):
        delay = next_delay([0, 300], 1, status=status, retry_after=header)
        assert 270 <= delay <= 330


def test_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60
    assert parse_retry_after("garbage") is None
