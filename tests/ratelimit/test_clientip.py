"""client_ip: the peer, or the forwarded client address when (and only when) the peer is a trusted proxy."""

from __future__ import annotations

from ipaddress import ip_network

from hypothesis import given
from hypothesis import strategies as st

from openkvs.ratelimit import client_ip

PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


def scope(peer: str | None, *xff: str) -> dict:
    return {
        "type": "http",
        "client": None if peer is None else (peer, 12345),
        "headers": [(b"host", b"example.com")] + [(b"x-forwarded-for", v.encode()) for v in xff],
    }


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_ip(scope("203.0.113.7", "198.51.100.1"), []) == "203.0.113.7"


def test_header_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip(scope("203.0.113.7", "198.51.100.1"), PROXIES) == "203.0.113.7"


def test_right_most_untrusted_address_wins() -> None:
    # The client claimed 1.1.1.1; our proxy appended what it really saw (198.51.100.1).
    assert client_ip(scope("10.0.0.1", "1.1.1.1, 198.51.100.1"), PROXIES) == "198.51.100.1"


def test_chains_of_trusted_proxies_are_walked() -> None:
    assert client_ip(scope("10.0.0.1", "1.1.1.1, 198.51.100.1, 10.0.0.2, 10.0.0.3"), PROXIES) == "198.51.100.1"


def test_repeated_headers_form_one_list() -> None:
    assert client_ip(scope("10.0.0.1", "1.1.1.1, 198.51.100.1", "10.0.0.2"), PROXIES) == "198.51.100.1"


def test_no_header_or_only_proxies_gives_the_left_most_proxy() -> None:
    assert client_ip(scope("10.0.0.1"), PROXIES) == "10.0.0.1"
    assert client_ip(scope("10.0.0.1", "10.0.0.9, 10.0.0.2"), PROXIES) == "10.0.0.9"


def test_garbage_in_the_client_slot_is_not_trusted() -> None:
    assert client_ip(scope("10.0.0.1", "198.51.100.1, nonsense, 10.0.0.2"), PROXIES) == "10.0.0.2"
    assert client_ip(scope("10.0.0.1", ""), PROXIES) == "10.0.0.1"


def test_address_forms() -> None:
    assert client_ip(scope("10.0.0.1", "198.51.100.1:4711"), PROXIES) == "198.51.100.1"
    assert client_ip(scope("10.0.0.1", "[2001:DB8::1]:4711"), PROXIES) == "2001:db8::1"
    assert client_ip(scope("fd00::1", "2001:db8::1"), PROXIES) == "2001:db8::1"
    assert client_ip(scope("::ffff:203.0.113.7"), PROXIES) == "203.0.113.7"
    assert client_ip(scope("::ffff:10.0.0.1", "198.51.100.1"), PROXIES) == "198.51.100.1"


def test_peers_that_are_not_ip_addresses() -> None:
    assert client_ip(scope(None, "198.51.100.1"), PROXIES) == "unknown"
    assert client_ip(scope("testclient", "198.51.100.1"), PROXIES) == "testclient"


@given(claimed=st.lists(st.text(alphabet="0123456789abcdef.:[], x", max_size=20), max_size=5))
def test_a_client_cannot_choose_its_address(claimed: list[str]) -> None:
    """Whatever a client puts in the header, behind one trusted proxy it is counted as what the proxy saw."""
    header = ", ".join(claimed + ["198.51.100.1"])
    assert client_ip(scope("10.0.0.1", header), PROXIES) == "198.51.100.1"
