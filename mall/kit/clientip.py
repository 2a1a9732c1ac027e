"""The client's address, for rate limits and logs.

It is the TCP peer from the ASGI scope. X-Forwarded-For is believed only when the peer is
one of `settings.trusted_proxies` (MALL_TRUSTED_PROXIES), and then only as far as the hops
are trusted: the header is read from the right, each trusted proxy names the hop before
it, and the first address that is not a trusted proxy is the client. Anything a client
writes further left is ignored, so a client cannot pick its own address."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from mall.config import get_settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = "unknown"


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in networks)


def client_ip(scope: Any) -> str:
    """The client address of an ASGI scope (or a Starlette Request), as text."""
    scope = getattr(scope, "scope", scope)
    client = scope.get("client")
    peer = _parse(str(client[0])) if client else None
    if peer is None:
        return UNKNOWN
    networks = _networks(tuple(get_settings().trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return str(peer)
    hops: list[str] = []
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-for":
            hops.extend(value.decode("latin-1").split(","))
    current = peer
    for hop in reversed(hops):
        if not _trusted(current, networks):
            break
        address = _parse(hop)
        if address is None:  # garbage from whoever is left of the last trusted proxy
            break
        current = address
    return str(current)


def rate_key(ip: str) -> str:
    """The bucket an address is counted in: IPv6 clients by their /64 (one subscriber
    usually gets a whole /64, so counting single addresses would not limit anyone)."""
    address = _parse(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address) if address is not None else UNKNOWN
