"""Client-given callback URLs, kept from turning the proxy into a way into its own network (SSRF).

The proxy sits inside a team's network and POSTs relayed callbacks to URLs its clients name.
A URL is refused (Kling's ``1201``, HTTP 400) when it is not ``http``/``https``, has no host,
carries a user or password, or names a host any of whose addresses is loopback, private,
link-local (the cloud metadata service, ``169.254.169.254``, included), unspecified,
multicast, broadcast, reserved, documentation or benchmarking space, shared address space
(``100.64.0.0/10``), or one of those in IPv6 clothing (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
``2002::/16``, NAT64 ``64:ff9b::/96``; IPv4-compatible and Teredo addresses are refused
whole). All addresses count: a name with one public and one private address is refused. A
host that does not resolve is refused too. A host the operator allows (``allowed_hosts``:
``--allow-callback-host``, or a key's own callback hosts), compared lower-cased, as
``host`` or ``host:port``, passes without any lookup.

Checking a URL once is not enough: its name can resolve to a public address when checked and
to ``127.0.0.1`` a second later, when the request connects (DNS rebinding). Deliveries go
through :class:`GuardedTransport`, whose network backend (:class:`GuardedBackend`) resolves the
name itself at connect time, checks every address, and connects to the address it checked,
while TLS still verifies the certificate against the host name (SNI and hostname check are
httpcore's, on the URL's host). It never follows redirects: a ``3xx`` is an answer like any
other (a failed delivery).

``resolver`` everywhere is a function ``(host, port) -> addresses`` (strings), raising
``OSError`` when the name does not resolve; :func:`system_resolver` (``getaddrinfo``) by
default, injected in tests.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import anyio.to_thread
import httpcore
import httpx

from ..errors import InvalidRequest

__all__ = [
    "GuardedBackend",
    "GuardedTransport",
    "Resolver",
    "acheck_callback_url",
    "check_addresses",
    "check_callback_url",
    "forbidden_reason",
    "guarded_client",
    "host_allowed",
    "parse_callback_url",
    "resolve_host",
    "system_resolver",
]

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses``; raises ``OSError`` when the host does not resolve."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL = 2048
"""Longest callback URL taken."""

CODE = 1201

_V4 = [
    ("255.255.255.255/32", "broadcast"),
    ("169.254.169.254/32", "link-local (the cloud metadata service)"),
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved for IETF protocols"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
]
_V6 = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001::/23", "reserved for IETF protocols"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
]
_BLOCKED: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = [
    (ipaddress.ip_network(net), why) for net, why in [*_V4, *_V6]
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, code=CODE, http_status=400)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives ``host`` (TCP), in its order, without repeats."""
    found: list[str] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class CallbackTarget:
    """A callback URL taken apart: ``host`` as it is connected to (IDNA, no brackets)."""

    url: str
    scheme: str
    host: str
    port: int


def parse_callback_url(url: object) -> CallbackTarget:
    """The scheme, host and port of ``url``, after the checks that need no lookup (scheme,
    host, no user or password, a sane length, no whitespace or control characters).
    Raises :class:`InvalidRequest` (1201, HTTP 400)."""
    if not isinstance(url, str) or not url:
        raise _refuse("callback_url must be a non-empty string")
    if len(url) > MAX_URL:
        raise _refuse(f"callback_url is longer than {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise _refuse("callback_url must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)  # the parser of the client that sends: no parser differential
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise _refuse(f"callback_url is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise _refuse("callback_url must be an http:// or https:// URL")
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = "@"  # httpx took it, urllib does not: refuse rather than guess
    if parsed.userinfo or "@" in netloc:
        raise _refuse("callback_url must not carry a user name or password")
    try:
        host = parsed.raw_host.decode("ascii")
    except UnicodeDecodeError:  # pragma: no cover - httpx IDNA-encodes hosts
        raise _refuse("callback_url has a host that is not valid") from None
    if not host:
        raise _refuse("callback_url must name a host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise _refuse(f"callback_url is not a valid URL (port {parsed.port} is out of range)")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return CallbackTarget(url=url, scheme=parsed.scheme, host=host.lower(), port=port)


def _normal_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


Allowed = frozenset[tuple[str, int | None]]
"""Allowed hosts, normalised: ``(host, port)``, ``port`` None for any port."""


def _allowed_set(allowed_hosts: Iterable[str]) -> Allowed:
    out: set[tuple[str, int | None]] = set()
    for entry in allowed_hosts:
        text = entry.strip().lower()
        port: str | None = None
        if text.startswith("[") and "]" in text:  # [v6] or [v6]:port
            text, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        elif text.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
            text, _, port = text.partition(":")
        name = _normal_host(text)
        if not name or (port and not port.isdigit()):
            continue  # nothing, or a port that is not one: allows nothing
        out.add((name, int(port) if port else None))
    return frozenset(out)


def host_allowed(host: str, port: int, allowed_hosts: Iterable[str]) -> bool:
    """True when ``host`` is one the operator allows: an entry ``host`` (any port) or
    ``host:port``, compared lower-cased (IPv6 in brackets or bare, a trailing dot ignored)."""
    allowed = _allowed_set(allowed_hosts)
    name = _normal_host(host)
    return (name, None) in allowed or (name, port) in allowed


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_normal_host(host))
    except ValueError:
        return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a callback must not go to ``address`` (``"loopback"``, ...), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        inner: ipaddress.IPv4Address | None = None
        form = ""
        if address.ipv4_mapped is not None:
            inner, form = address.ipv4_mapped, "IPv4-mapped"
        elif address.sixtofour is not None:
            inner, form = address.sixtofour, "6to4"
        elif address in _NAT64:
            inner, form = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
        if inner is not None:
            why = forbidden_reason(inner)
            return None if why is None else f"{why} ({form} {inner})"
    for network, why in _BLOCKED:
        if address.version == network.version and address in network:
            return why
    for flag in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{flag}"):
            return flag.replace("_", "-")
    if not address.is_global:
        return "not globally reachable"
    return None


def resolve_host(host: str, port: int, resolver: Resolver = system_resolver) -> list[IPAddress]:
    """The addresses of ``host`` (an IP literal is its own address, without a lookup).
    Raises :class:`InvalidRequest` (1201) when it does not resolve."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        answers = list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise _refuse(f"callback_url host {host!r} does not resolve ({reason}); use a public host") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(str(answer)))
        except ValueError:
            raise _refuse(f"callback_url host {host!r} resolves to {answer!r}, not an IP address") from None
    if not addresses:
        raise _refuse(f"callback_url host {host!r} does not resolve to any address")
    return addresses


def check_addresses(host: str, addresses: Iterable[IPAddress]) -> None:
    """Raise :class:`InvalidRequest` (1201) when any of ``host``'s ``addresses`` is forbidden."""
    for address in addresses:
        why = forbidden_reason(address)
        if why is not None:
            named = "" if _literal(host) == address else f" resolves to {address}, which"
            raise _refuse(
                f"callback_url host {host!r}{named} is not a public address ({why}); callbacks go "
                "only to public hosts (an operator can allow this host with --allow-callback-host)"
            )


def check_callback_url(
    url: str, *, allowed_hosts: Collection[str] = (), resolver: Resolver = system_resolver
) -> str:
    """``url`` if the proxy may send callbacks to it; else :class:`InvalidRequest` (1201, HTTP
    400) saying why. Resolves the host (blocking: from async code use
    :func:`acheck_callback_url`); connects to nothing."""
    target = parse_callback_url(url)
    if host_allowed(target.host, target.port, allowed_hosts):
        return url
    check_addresses(target.host, resolve_host(target.host, target.port, resolver))
    return url


async def acheck_callback_url(
    url: str, *, allowed_hosts: Collection[str] = (), resolver: Resolver = system_resolver
) -> str:
    """:func:`check_callback_url` with the lookup in a worker thread."""
    target = parse_callback_url(url)
    if host_allowed(target.host, target.port, allowed_hosts):
        return url
    addresses = await anyio.to_thread.run_sync(resolve_host, target.host, target.port, resolver)
    check_addresses(target.host, addresses)
    return url


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves each host itself (with ``resolver``) when it
    connects, refuses (:class:`InvalidRequest`, 1201) forbidden addresses unless the host is
    allowed, and connects to the addresses it checked, one after the other until one answers.
    httpcore still knows the host by its name: TLS sends it as SNI and checks the
    certificate against it."""

    def __init__(
        self,
        *,
        allowed_hosts: Collection[str] = (),
        resolver: Resolver = system_resolver,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allowed_hosts = frozenset(allowed_hosts)
        self.resolver = resolver
        self._backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await anyio.to_thread.run_sync(resolve_host, host, port, self.resolver)
        if not host_allowed(host, port, self.allowed_hosts):
            check_addresses(host, addresses)
        targets = [str(address) for address in addresses]
        failure: Exception | None = None
        for target in targets:
            try:
                return await self._backend.connect_tcp(
                    target, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        if failure is None:  # pragma: no cover - resolve_host never answers with no address
            raise _refuse(f"callback_url host {host!r} has no address to connect to")
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _refuse("callbacks are never sent over a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


_EXCEPTIONS: list[tuple[type[Exception], type[httpx.HTTPError]]] = [
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
]
"""httpcore's errors as httpx's, most specific first (as httpx's own transport maps them)."""


def _mapped(exc: Exception) -> Exception:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc))
    return exc


class _Stream(httpx.AsyncByteStream):
    def __init__(self, inner: AsyncIterable[bytes]) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._inner:
                yield part
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore connection pool whose network backend is a
    :class:`GuardedBackend`: every new connection is checked when it is made. HTTP/1.1, no
    proxy (environment proxies would connect for us, to addresses we never checked)."""

    def __init__(
        self,
        *,
        allowed_hosts: Collection[str] = (),
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 32,
    ) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        self.backend = GuardedBackend(allowed_hosts=allowed_hosts, resolver=resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=max_connections,
            network_backend=self.backend,
            http1=True,
            http2=False,
            retries=0,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.AsyncByteStream):  # pragma: no cover - httpx's contract
            raise _refuse("a callback body must be an async stream")
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions={k: v for k, v in request.extensions.items() if k != "sni_hostname"},
        )
        try:
            response = await self._pool.handle_async_request(core)
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        stream = response.stream
        if not isinstance(stream, AsyncIterable):  # pragma: no cover - httpcore's contract
            raise _refuse("the callback receiver's answer could not be read")
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Stream(stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> GuardedTransport:
        await self._pool.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._pool.__aexit__(exc_type, exc_value, traceback)


def guarded_client(
    *,
    allowed_hosts: Collection[str] = (),
    resolver: Resolver = system_resolver,
    timeout: float = 10.0,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over a :class:`GuardedTransport` that never follows redirects
    and ignores proxy settings of the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allowed_hosts=allowed_hosts, resolver=resolver, verify=verify),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
    )
