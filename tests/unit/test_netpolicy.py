"""The address policy of media downloads, and the connection pinned to the address it checked."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from openai_frontend.media.netpolicy import (
    AddressNotAllowed,
    AllowRule,
    NetPolicy,
    PinnedBackend,
    PinnedTransport,
    denial_reason,
    domain_allowed,
    parse_allow_rules,
    parse_domains,
)
from tests.fakes import FakeDns


@pytest.mark.parametrize(("address", "needle"), [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "metadata"), ("169.254.170.2", "metadata"), ("169.254.1.1", "link-local"),
    ("100.100.100.200", "metadata"), ("100.64.0.1", "carrier-grade"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"), ("192.0.2.1", "documentation"), ("198.18.0.1", "benchmarking"),
    ("192.0.0.192", "metadata"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fc00::1", "private"),
    ("fd00:ec2::254", "metadata"), ("ff02::1", "multicast"), ("2001:db8::1", "documentation"),
    ("2001::1", "IETF"),  # Teredo
    ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1"), ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "private"), ("::127.0.0.1", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64 127.0.0.1"), ("64:ff9b::a9fe:a9fe", "metadata"), ("2002:7f00:1::", "6to4 127.0.0.1"),
    ("2002:a00:1::", "6to4 10.0.0.1"),
])
def test_denial_reason_names_the_range_when_the_address_is_not_public(address, needle) -> None:
    reason = denial_reason(ipaddress.ip_address(address))
    assert reason is not None and needle in reason, (address, reason)


@pytest.mark.parametrize("address", [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111",
    "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::1",
])
def test_denial_reason_is_none_when_the_address_is_public(address) -> None:
    assert denial_reason(ipaddress.ip_address(address)) is None


def test_allow_rules_parse_networks_addresses_and_ports_when_written_in_any_form() -> None:
    rules = parse_allow_rules(" 10.0.0.0/8, 127.0.0.1:8000 ,[::1]:9000, fd00::/8, [fe80::/10] ")
    assert [str(r) for r in rules] == ["10.0.0.0/8", "127.0.0.1:8000", "[::1]:9000", "fd00::/8", "fe80::/10"]
    assert parse_allow_rules("") == ()


@pytest.mark.parametrize("text", ["10.0.0.0/33", "localhost", "127.0.0.1:0", "127.0.0.1:http", "[::1", "[::1]x",
                                  "1.2.3.4:99999"])
def test_allow_rules_refuse_an_entry_when_it_is_no_network(text) -> None:
    with pytest.raises(ValueError, match="bad"):
        parse_allow_rules(text)


def test_allow_rule_with_a_port_allows_only_that_port() -> None:
    (rule,) = parse_allow_rules("127.0.0.1:8000")
    assert rule.matches(ipaddress.ip_address("127.0.0.1"), 8000)
    assert not rule.matches(ipaddress.ip_address("127.0.0.1"), 8001)
    assert not rule.matches(ipaddress.ip_address("127.0.0.2"), 8000)
    assert not rule.matches(ipaddress.ip_address("::ffff:127.0.0.1"), 8000)


def test_metadata_endpoint_stays_refused_when_only_its_whole_range_is_allowed() -> None:
    metadata = ipaddress.ip_address("169.254.169.254")
    assert not AllowRule(ipaddress.ip_network("169.254.0.0/16")).matches(metadata, 80)
    assert AllowRule(ipaddress.ip_network("169.254.169.254/32")).matches(metadata, 80)
    assert AllowRule(ipaddress.ip_network("169.254.0.0/16")).matches(ipaddress.ip_address("169.254.3.4"), 80)


def test_domains_match_exactly_or_below_a_wildcard_when_listed() -> None:
    domains = parse_domains("Media.Example.com., *.cdn.example.org, bücher.de")
    assert domains == ("media.example.com", "*.cdn.example.org", "xn--bcher-kva.de")
    assert domain_allowed("media.example.com", domains)
    assert not domain_allowed("evil-media.example.com", domains)
    assert not domain_allowed("example.com", domains)
    assert domain_allowed("a.b.cdn.example.org", domains)
    assert not domain_allowed("cdn.example.org", domains)
    assert not domain_allowed("xcdn.example.org", domains)
    assert domain_allowed("xn--bcher-kva.de", domains)
    with pytest.raises(ValueError):
        parse_domains("a/b")


# --- resolution and the pinned connection ------------------------------------------------------------


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


@pytest.mark.parametrize(("answers", "needle"), [
    (["10.0.0.7"], "private"), (["169.254.169.254"], "metadata"), (["::ffff:127.0.0.1"], "IPv4-mapped"),
    (["93.184.216.34", "10.0.0.1"], "private"),  # one internal answer refuses the host
    (["fe80::1%eth0"], "link-local"),
])
def test_policy_refuses_a_host_when_any_address_it_resolves_to_is_internal(answers, needle) -> None:
    policy = NetPolicy(resolver=FakeDns({"evil.test": [answers]}))
    with pytest.raises(AddressNotAllowed) as info:
        run(policy.resolve("evil.test", 80))
    assert needle in info.value.reason and not info.value.literal


def test_policy_checks_an_ip_literal_without_resolving_it() -> None:
    dns = FakeDns({})
    with pytest.raises(AddressNotAllowed) as info:
        run(NetPolicy(resolver=dns).resolve("127.0.0.1", 80))
    assert dns.calls == [] and info.value.literal
    assert run(NetPolicy(resolver=dns).resolve("93.184.216.34", 80)) == ["93.184.216.34"]


def test_policy_allows_an_internal_address_when_a_rule_names_it() -> None:
    policy = NetPolicy(parse_allow_rules("10.0.0.0/8"), FakeDns({"in.test": [["10.9.9.9"]]}))
    assert run(policy.resolve("in.test", 443)) == ["10.9.9.9"]


def test_the_connection_goes_to_the_address_that_was_checked_when_dns_changes_its_answer(http_media) -> None:
    """DNS rebinding: the first answer is checked and connected to; a later, internal answer is never used."""
    http_media.put("pinned.bin", b"pinned")
    dns = FakeDns({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    policy = NetPolicy(parse_allow_rules(f"127.0.0.1:{http_media.port}"), dns)
    seen: list[str] = []

    async def fetch() -> httpx.Response:
        transport = PinnedTransport(policy, limits=httpx.Limits(max_connections=2, max_keepalive_connections=0))
        backend = transport._pool._network_backend
        assert isinstance(backend, PinnedBackend)  # downloads run on ours (guards an httpx upgrade)
        inner = backend._inner
        original = inner.connect_tcp

        async def spy(host: str, port: int, **kw: object):  # noqa: ANN202
            seen.append(host)
            return await original(host, port, **kw)

        inner.connect_tcp = spy  # type: ignore[method-assign]
        async with httpx.AsyncClient(transport=transport) as client:
            first = await client.get(f"http://rebind.test:{http_media.port}/pinned.bin")
            with pytest.raises(AddressNotAllowed):  # a new connection resolves again, and is checked again
                await client.get(f"http://rebind.test:{http_media.port}/pinned.bin")
            return first

    r = run(fetch())
    assert r.status_code == 200 and r.content == b"pinned"
    assert r.request.headers["host"] == f"rebind.test:{http_media.port}"
    assert seen == ["127.0.0.1"] and dns.calls == ["rebind.test", "rebind.test"]


def test_a_host_that_does_not_resolve_fails_as_a_connect_error() -> None:
    async def fetch() -> None:
        transport = PinnedTransport(NetPolicy(resolver=FakeDns({})), limits=httpx.Limits())
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://nowhere.test/x.mp4")

    with pytest.raises(httpx.ConnectError, match="cannot resolve host 'nowhere.test'"):
        run(fetch())
