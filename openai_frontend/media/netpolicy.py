"""Where http(s) media URLs may connect: the address policy, and the network backend that applies it.

Every address a media host resolves to is checked; private, loopback, link-local, multicast,
reserved and cloud-metadata ranges (IPv4 and IPv6; IPv4 inside IPv6 — mapped, compatible,
NAT64, 6to4 — is judged by the IPv4 address it carries) are refused unless the operator allows
them. The check happens inside the connection: :class:`PinnedBackend` resolves the host once,
checks every answer and connects to an address it checked, so a DNS answer that changes between
a check and the connect (DNS rebinding) cannot reach anything the policy refused. Redirect hops
open their own connections, so each is checked the same way.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import anyio
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port -> the addresses it resolves to (strings as getaddrinfo gives them)
Resolver = Callable[[str, int], Awaitable[list[str]]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# IPv4 ranges that are not the public internet (IANA special-purpose registry), with the reason.
DENIED_V4: tuple[tuple[IPNetwork, str], ...] = (
    (_V4("0.0.0.0/8"), "'this network' (unspecified)"),
    (_V4("10.0.0.0/8"), "a private network"),
    (_V4("100.64.0.0/10"), "shared address space (carrier-grade NAT)"),
    (_V4("127.0.0.0/8"), "loopback (this machine)"),
    (_V4("169.254.0.0/16"), "link-local (cloud metadata lives here)"),
    (_V4("172.16.0.0/12"), "a private network"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (_V4("192.88.99.0/24"), "the 6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "a private network"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved (and broadcast)"),
)
# IPv6: only global unicast (2000::/3) can be public; inside it, these special ranges are not.
GLOBAL_UNICAST_V6 = _V6("2000::/3")
DENIED_V6: tuple[tuple[IPNetwork, str], ...] = (
    (_V6("2001::/23"), "IETF protocol assignments (Teredo, benchmarking, ORCHID)"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
)
# IPv6 forms that carry an IPv4 address: judged by that address.
_NAT64 = (_V6("64:ff9b::/96"), _V6("64:ff9b:1::/48"))
_SIX_TO_FOUR = _V6("2002::/16")
_V4_COMPATIBLE = _V6("::/96")  # deprecated ::a.b.c.d (:: and ::1 are handled first)

#: Cloud instance-metadata endpoints. Inside denied ranges anyway; in addition an allow rule
#: reaches one only when it names that single address, so allowing e.g. 169.254.0.0/16 for a
#: device on the link never opens the metadata service by accident.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.169.123",  # AWS time sync
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud (legacy)
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "fd00:ec2::123",
))


def denial_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address, or None when it is one."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata endpoint"
    if isinstance(address, ipaddress.IPv4Address):
        return next((why for net, why in DENIED_V4 if address in net), None)
    if address.ipv4_mapped is not None:
        return _embedded(address.ipv4_mapped, "IPv4-mapped")
    if address.is_unspecified:
        return "unspecified (::)"
    if address.is_loopback:
        return "loopback (this machine)"
    if address in _V4_COMPATIBLE:
        return _embedded(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-compatible")
    if any(address in net for net in _NAT64):
        return _embedded(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64")
    if address in _SIX_TO_FOUR:
        return _embedded(address.sixtofour, "6to4")  # type: ignore[arg-type]
    if address.is_multicast:
        return "multicast"
    if address not in GLOBAL_UNICAST_V6:
        if address.is_link_local:
            return "link-local"
        if address in _V6("fc00::/7"):
            return "a private network (unique local)"
        return "not global unicast"
    return next((why for net, why in DENIED_V6 if address in net), None)


def _embedded(v4: ipaddress.IPv4Address, form: str) -> str | None:
    why = denial_reason(v4)
    return f"{why} ({form} {v4})" if why else None


@dataclass(frozen=True)
class AllowRule:
    """An operator's exception to the policy: a network, optionally only on one port."""

    network: IPNetwork
    port: int | None = None

    def matches(self, address: IPAddress, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if address.version != self.network.version or address not in self.network:
            return False
        # A metadata endpoint needs a rule naming exactly it (see METADATA_ADDRESSES).
        return address not in METADATA_ADDRESSES or self.network.num_addresses == 1

    def __str__(self) -> str:
        net = str(self.network) if self.network.num_addresses > 1 else str(self.network.network_address)
        if self.port is None:
            return net
        return f"[{net}]:{self.port}" if self.network.version == 6 else f"{net}:{self.port}"


def parse_allow_rules(text: str) -> tuple[AllowRule, ...]:
    """``10.1.0.0/16, 127.0.0.1:8000, [::1]:8000, fd00::/8`` -> rules; ValueError names a bad entry."""
    rules = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        port: str | None = None
        net = entry
        if entry.startswith("["):  # [v6 network]:port or [v6 network]
            close = entry.find("]")
            rest = entry[close + 1:]
            if close < 0 or (rest and not rest.startswith(":")):
                raise ValueError(f"bad network {entry!r}: write IPv6 with a port as [addr]:port")
            net, port = entry[1:close], (rest[1:] if rest else None)
        elif entry.count(":") == 1:  # IPv4 network:port
            net, port = entry.split(":")
        try:
            network = ipaddress.ip_network(net, strict=False)
            port_number = int(port) if port is not None else None
        except ValueError:
            raise ValueError(f"bad network {entry!r}: want a CIDR or address, optionally :port "
                             "(10.0.0.0/8, 127.0.0.1:8000, [::1]:8000)") from None
        if port_number is not None and not 0 < port_number < 65536:
            raise ValueError(f"bad port in {entry!r}")
        rules.append(AllowRule(network, port_number))
    return tuple(rules)


def parse_domains(text: str) -> tuple[str, ...]:
    """``example.com, *.cdn.example.com`` -> lower-case ASCII (IDNA) names; ValueError names a bad entry."""
    out = []
    for raw in text.split(","):
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        wildcard = entry.startswith("*.")
        name = entry[2:] if wildcard else entry
        try:
            ascii_name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"bad domain {raw.strip()!r}") from None
        if not ascii_name or "*" in ascii_name or "/" in ascii_name or ":" in ascii_name:
            raise ValueError(f"bad domain {raw.strip()!r}: want a host name or *.name")
        out.append(("*." if wildcard else "") + ascii_name)
    return tuple(out)


def domain_allowed(host: str, domains: tuple[str, ...]) -> bool:
    """Whether ``host`` (lower-case ASCII) is listed: ``name`` exactly, ``*.name`` any name below it."""
    host = host.rstrip(".")
    return any(host.endswith(d[1:]) if d.startswith("*.") else host == d for d in domains)


class AddressNotAllowed(Exception):
    """A media host resolved to an address the policy refuses (raised from inside the connection)."""

    def __init__(self, host: str, address: IPAddress, port: int, reason: str) -> None:
        super().__init__(f"{host} -> {address}:{port} is {reason}")
        self.host = host
        self.address = address
        self.port = port
        self.reason = reason

    @property
    def literal(self) -> bool:
        """Whether the URL named the address itself (then echoing it tells the client nothing new)."""
        return _ip(self.host) is not None


async def system_resolver(host: str, port: int) -> list[str]:
    """The machine's resolver (getaddrinfo in a worker thread, IDNA 2008 names)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class NetPolicy:
    """Which addresses media downloads may connect to; ``resolver`` is swapped in tests."""

    allow: tuple[AllowRule, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    def check(self, host: str, address: IPAddress, port: int) -> None:
        """Raises :class:`AddressNotAllowed` unless ``address:port`` is public or explicitly allowed."""
        reason = denial_reason(address)
        if reason is not None and not any(rule.matches(address, port) for rule in self.allow):
            raise AddressNotAllowed(host, address, port, reason)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, each checked; one refused address refuses the host.

        Refusing the whole host (rather than skipping the bad answers) keeps a name that mixes
        public and internal answers from reaching the internal one on a retry or fallback.
        """
        literal = _ip(host)
        if literal is not None:
            self.check(host, literal, port)
            return [str(literal)]
        try:
            answers = await self.resolver(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host!r} ({exc})") from None
        if not answers:
            raise httpcore.ConnectError(f"cannot resolve host {host!r}")
        for answer in answers:
            address = _ip(answer)
            if address is None:
                raise httpcore.ConnectError(f"host {host!r} resolved to something that is no address: {answer!r}")
            self.check(host, address, port)
        return answers


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is not the address
    except ValueError:
        return None


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses :class:`NetPolicy` checked.

    httpcore asks it for ``host:port`` as the URL names them; it resolves ``host`` once, checks
    every answer, and connects to those very addresses (the first that answers). TLS then runs
    on that socket with the URL's host name for SNI and certificate checks, as always.
    """

    def __init__(self, policy: NetPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self.policy.resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} took longer than {timeout:g} s") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve() returns at least one address
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("media downloads never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (HTTP/1.1, TLS verification, pooling) on a :class:`PinnedBackend`.

    No proxies and no environment (``HTTP_PROXY``, ``SSL_CERT_FILE``, .netrc): a proxy would make
    the proxy's address the one checked instead of the media host's.
    """

    def __init__(self, policy: NetPolicy, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx takes no network backend, so the pool it built is replaced by one with ours;
        # tests/unit/test_netpolicy.py proves downloads go through it (a change in httpx fails there).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(policy),
        )
