"""Which address a request counts against: the peer, unless the peer is a proxy we trust."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(scope: Mapping[str, Any], trusted_proxies: Iterable[IPNetwork]) -> str:
    """The client address for an ASGI ``scope``.

    The peer address, unless the peer is in ``trusted_proxies``: then ``X-Forwarded-For`` is read from the right
    (each proxy appends the address it received from) and the first address that is not a trusted proxy wins.
    Everything left of it was written by the client and could be anything, so it is never used. When the
    header has nothing usable (absent, only trusted hops, or garbage where the client address should be), the
    left-most trusted hop reached is returned: wrong-but-safe (shared bucket) beats spoofable.

    IPv4-mapped IPv6 addresses are reported as IPv4 so that one client has one bucket whichever way it
    connected. A peer that is not an IP address (a Unix socket, a test client) is returned as given, or
    ``"unknown"`` when the server did not report one.
    """
    trusted = tuple(trusted_proxies)
    client = scope.get("client")
    if not client:
        return "unknown"
    peer = _parse(client[0])
    if peer is None:
        return str(client[0])
    if not _in(peer, trusted):
        return str(peer)
    found = peer
    for entry in reversed(_forwarded_for(scope)):
        addr = _parse(entry)
        if addr is None:
            break
        if not _in(addr, trusted):
            return str(addr)
        found = addr
    return str(found)


def _forwarded_for(scope: Mapping[str, Any]) -> list[str]:
    # Several X-Forwarded-For headers form one list, in order (RFC 9110 field combination).
    entries: list[str] = []
    for name, value in scope.get("headers") or ():
        if name.lower() == b"x-forwarded-for":
            entries.extend(value.decode("latin-1").split(","))
    return entries


def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    # Some proxies add a port: "1.2.3.4:5678" or "[2001:db8::1]:5678".
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _in(addr: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    # ``in`` across IP versions is simply False, so mixed lists need no special case.
    return any(addr in net for net in networks)
