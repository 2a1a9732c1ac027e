"""The client address: the TCP peer, and X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest

from mall.config import Settings
from mall.kit.clientip import client_ip, rate_key

pytestmark = pytest.mark.nodb


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 5000) if peer else None,
        "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded],
    }


@pytest.fixture
def trusting(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(settings, "trusted_proxies", ["10.0.0.0/8", "::1"])
    return settings


def test_without_trusted_proxies_the_header_is_ignored(settings: Settings) -> None:
    assert settings.trusted_proxies == []
    assert client_ip(scope("198.51.100.4", "1.2.3.4")) == "198.51.100.4"
    assert client_ip(scope(None)) == "unknown"


def test_the_first_untrusted_hop_from_the_right_is_the_client(trusting: Settings) -> None:
    # the client wrote 1.2.3.4 itself; the edge proxy (10.0.0.2) saw 203.0.113.9
    assert client_ip(scope("10.0.0.1", "1.2.3.4, 203.0.113.9, 10.0.0.2")) == "203.0.113.9"
    # several header lines are one list
    assert client_ip(scope("10.0.0.1", "1.2.3.4", "203.0.113.9")) == "203.0.113.9"
    assert client_ip(scope("::1", "[2001:db8::5]:443")) == "2001:db8::5"
    # an untrusted peer's header is not read at all
    assert client_ip(scope("198.51.100.4", "10.0.0.9")) == "198.51.100.4"
    # garbage left of a trusted hop stops the walk at the last address a proxy vouched for
    assert client_ip(scope("10.0.0.1", "nonsense, 10.0.0.3")) == "10.0.0.3"
    # nothing forwarded: the proxy itself
    assert client_ip(scope("10.0.0.1")) == "10.0.0.1"


def test_rate_buckets_group_ipv6_by_64() -> None:
    assert rate_key("2001:db8:1:2::10") == rate_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:3::10") != rate_key("2001:db8:1:2::10")
    assert rate_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert rate_key("198.51.100.4") == "198.51.100.4"
