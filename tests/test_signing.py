"""URL signatures (API.md 5.3): the worked examples, byte-compatibility with the official client's own functions,
padding, expiry, and that garbage or tampered signatures are never accepted and never raise."""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import pytest
from apify_client._utils.crypto import create_hmac_signature, create_storage_content_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.signing import (
    content_signature,
    hmac_sig,
    record_signature,
    verify_content_signature,
    verify_record_signature,
)
from tests.conftest import examples

SECRET = "hmac-secret-key"
STORE = "resource-id"
EXAMPLE_CONTENT_SIG = "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS"


# -- the worked examples of 5.3 -----------------------------------------------------------------------------------


def test_hmac_worked_example() -> None:
    assert hmac_sig("hmac-secret-key", "hmac-message-to-be-authenticated") == "pcVagAsudj8dFqdlg7mG"


def test_content_signature_worked_example() -> None:
    assert content_signature(SECRET, STORE, 0) == EXAMPLE_CONTENT_SIG
    assert base64.urlsafe_b64decode(EXAMPLE_CONTENT_SIG) == b"0.0.3TwfEE659ufSNsmS47lR"
    assert verify_content_signature(SECRET, STORE, EXAMPLE_CONTENT_SIG)


def test_hmac_sig_is_base62_of_the_first_30_hex_digits() -> None:
    import hashlib
    import hmac

    digest = hmac.new(b"k", b"m", hashlib.sha256).hexdigest()[:30]
    sig = hmac_sig("k", "m")
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert sum(alphabet.index(c) * 62**i for i, c in enumerate(reversed(sig))) == int(digest, 16)
    assert sig[0] != "0"  # most significant first, no leading zeros


def test_record_signature_is_hmac_of_the_raw_key() -> None:
    assert record_signature(SECRET, "my-key") == hmac_sig(SECRET, "my-key")
    assert verify_record_signature(SECRET, "my-key", hmac_sig(SECRET, "my-key"))
    assert not verify_record_signature(SECRET, "other-key", hmac_sig(SECRET, "my-key"))
    assert not verify_record_signature("other-secret", "my-key", hmac_sig(SECRET, "my-key"))


# -- the official client's own functions --------------------------------------------------------------------------

safe_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)  # UTF-8 encodable


@given(secret=safe_text, message=safe_text)
@settings(max_examples=examples(300), deadline=None)
def test_hmac_sig_matches_official_client(secret: str, message: str) -> None:
    assert hmac_sig(secret, message) == create_hmac_signature(secret, message)


@given(secret=safe_text.filter(bool), store_id=st.from_regex(r"\A[a-zA-Z0-9]{1,17}\Z"))
@settings(max_examples=examples(200), deadline=None)
def test_official_content_signatures_verify(secret: str, store_id: str) -> None:
    never = create_storage_content_signature(store_id, secret)
    assert never == content_signature(secret, store_id, 0)
    assert verify_content_signature(secret, store_id, never)
    soon = create_storage_content_signature(store_id, secret, expires_in=timedelta(hours=1))
    assert verify_content_signature(secret, store_id, soon)
    assert not verify_content_signature(secret, store_id + "x", soon)
    assert not verify_content_signature(secret + "x", store_id, soon)


def test_official_record_signature_verifies() -> None:
    assert verify_record_signature(SECRET, "a.b(c)!'-_", create_hmac_signature(SECRET, "a.b(c)!'-_"))


# -- padding and expiry ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expires", [0, 10**13, 10**13 + 1, 10**13 + 2, 4102444800000])
def test_padded_and_unpadded_are_both_accepted(expires: int) -> None:
    sig = content_signature(SECRET, STORE, expires)
    unpadded = sig.rstrip("=")
    now = 1_000
    assert verify_content_signature(SECRET, STORE, sig, now_ms=now)
    assert verify_content_signature(SECRET, STORE, unpadded, now_ms=now)
    # only the exact padding, though: extra '=' is not base64
    assert not verify_content_signature(SECRET, STORE, unpadded + "=" * (len(sig) - len(unpadded) + 1), now_ms=now)


def test_some_padded_case_is_really_exercised() -> None:
    assert any(content_signature(SECRET, STORE, e).endswith("=") for e in (10**13, 10**13 + 1, 10**13 + 2))


def test_expiry_is_in_milliseconds() -> None:
    now_ms = int(time.time() * 1000)
    future = content_signature(SECRET, STORE, now_ms + 60_000)
    past = content_signature(SECRET, STORE, now_ms - 1)
    assert verify_content_signature(SECRET, STORE, future)
    assert not verify_content_signature(SECRET, STORE, past)
    # A seconds-based reading would take now_ms + 60_000 ms as ~year 50,000; make sure ms are compared with ms.
    assert not verify_content_signature(SECRET, STORE, future, now_ms=now_ms + 60_001)
    assert verify_content_signature(SECRET, STORE, future, now_ms=now_ms + 59_999)


def test_expiry_zero_never_expires() -> None:
    sig = content_signature(SECRET, STORE, 0)
    assert verify_content_signature(SECRET, STORE, sig, now_ms=10**18)


def test_official_client_expired_signature_is_rejected() -> None:
    sig = create_storage_content_signature(STORE, SECRET, expires_in=timedelta(seconds=-1))
    assert not verify_content_signature(SECRET, STORE, sig)


def _forge(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode()


@pytest.mark.parametrize(
    "payload",
    [
        f"1.0.{hmac_sig(SECRET, '1.0.' + STORE)}",  # version must be 0, even when its HMAC is right
        f"0.0.{hmac_sig(SECRET, '0.0.' + STORE)}.extra",  # exactly three parts
        "0.0",
        "0.-5." + hmac_sig(SECRET, "0.-5." + STORE),  # negative expiry
        "0.x." + hmac_sig(SECRET, "0.x." + STORE),
        "0.١٢٣." + hmac_sig(SECRET, "0.١٢٣." + STORE),  # non-ASCII digits
        "0.0." + hmac_sig(SECRET, "0.0.other-store"),
        "",
        "...",
    ],
)
def test_malformed_content_signatures_are_rejected(payload: str) -> None:
    assert not verify_content_signature(SECRET, STORE, _forge(payload))
    assert not verify_content_signature(SECRET, STORE, _forge(payload).rstrip("="))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "=",
        "====",
        "a",
        "!!!!",
        "MC4w LjNUd2ZFRTY1OXVmU05zbVM0N2xS",  # the decoder must not skip characters outside the alphabet
        "MC4w\nLjNUd2ZFRTY1OXVmU05zbVM0N2xS",
        " MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS",
        "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS=",
        "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS====",
        "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS" * 40,
        "é" * 10_000,
        "\x00" * 50,
        "\udcff",
        base64.urlsafe_b64encode(b"\xff\xfe.0.abc").decode(),
    ],
)
def test_garbage_is_rejected_without_raising(garbage: str) -> None:
    assert not verify_content_signature(SECRET, STORE, garbage)
    assert not verify_record_signature(SECRET, "key", garbage)


# -- properties ---------------------------------------------------------------------------------------------------

any_text = st.text(max_size=200)


@given(garbage=any_text)
@settings(max_examples=examples(500), deadline=None)
def test_random_strings_never_verify(garbage: str) -> None:
    assert not verify_content_signature(SECRET, STORE, garbage)
    assert not verify_record_signature(SECRET, "key", garbage)


@st.composite
def mutations(draw: st.DrawFn, original: str) -> str:
    data = bytearray(original.encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "append"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        byte = draw(st.integers(0, 255))
        if op == "replace" and data:
            data[pos] = byte
        elif op == "insert":
            data.insert(pos, byte)
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
        else:
            data.append(byte)
    return data.decode("utf-8", "replace")


PADDED = content_signature(SECRET, STORE, 10**13 + 1)
RECORD = record_signature(SECRET, "key")


@pytest.mark.parametrize("original", [EXAMPLE_CONTENT_SIG, PADDED], ids=["unpadded", "padded"])
@given(data=st.data())
@settings(max_examples=examples(800), deadline=None)
def test_mutated_content_signatures_never_verify(original: str, data: st.DataObject) -> None:
    now = 1_000
    assert verify_content_signature(SECRET, STORE, original, now_ms=now)
    mutated = data.draw(mutations(original))
    accepted = verify_content_signature(SECRET, STORE, mutated, now_ms=now)
    identity = mutated.rstrip("=") == original.rstrip("=") and mutated in (original, original.rstrip("="))
    assert accepted == identity, mutated


@given(data=st.data())
@settings(max_examples=examples(800), deadline=None)
def test_mutated_record_signatures_never_verify(data: st.DataObject) -> None:
    mutated = data.draw(mutations(RECORD))
    assert verify_record_signature(SECRET, "key", mutated) == (mutated == RECORD), mutated
