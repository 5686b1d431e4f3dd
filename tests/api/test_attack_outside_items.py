"""Findings of the attack run whose fixes belong to shared modules outside the dataset and queue code (jsontext.py,
api/common.py): each is a real test of the contract that failed before that module was changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from . import assert_error
from .test_datasets_attack import new_dataset, push_raw
from .test_queues_attack import Q, new_queue, raw_post, total

if TYPE_CHECKING:
    from tests.conftest import Server

UTF16_EMPTY_OBJECT = b"\xff\xfe{\x00}\x00"  # "{}" in UTF-16 with its BOM: not UTF-8


def test_a_body_in_utf16_is_400(shared_server: Server) -> None:
    """Contract section 1 (both APIs): JSON bodies must be UTF-8 (a BOM skipped), else 400 ``invalid-input``. A
    UTF-16 body was stored as an empty item, and added to a queue as the 400 of a missing uniqueKey."""
    with shared_server.client() as c:
        did = new_dataset(c)
        assert_error(push_raw(c, did, UTF16_EMPTY_OBJECT), 400, "invalid-input")
        assert c.get(f"/v2/datasets/{did}").json()["data"]["itemCount"] == 0
        body = '{"url":"https://example.com/","uniqueKey":"https://example.com/"}'.encode("utf-16")
        qid = new_queue(c)
        r = raw_post(c, f"{Q}/{qid}/requests", body)
        assert_error(r, 400, "invalid-input")
        assert total(c, qid) == 0
        assert_error(push_raw(c, did, '[{"a": 1}]'.encode("utf-32")), 400, "invalid-input")
        assert_error(push_raw(c, did, b'[{"a": "\xed\xa0\x80"}]'), 400, "invalid-input")  # a surrogate's bytes
        assert push_raw(c, did, b'\xef\xbb\xbf[{"a": 1}]').status_code == 201  # the UTF-8 BOM is skipped
        assert c.get(f"/v2/datasets/{did}").json()["data"]["itemCount"] == 1


@pytest.mark.parametrize("value", ["+1", " 1", "1_0", "\u0661", "9" * 5000])
def test_list_offsets_and_limits_are_ascii_digits_only(shared_server: Server, value: str) -> None:
    """Datasets contract section 1: integer query parameters are decimal digits without sign, else 400. ``+1``,
    `` 1``, ``1_0`` and the Arabic-Indic digit one were read as numbers (datasets and queues lists, queue head)."""
    with shared_server.client() as c:
        qid = new_queue(c)
        for path, name in (("/v2/datasets", "offset"), ("/v2/datasets", "limit"), (Q, "offset"),
                           (f"{Q}/{qid}/head", "limit"), (f"{Q}/{qid}/requests", "limit")):
            assert_error(c.get(path, params={name: value}), 400, "invalid-input")


def test_list_offsets_and_limits_still_take_plain_digits(shared_server: Server) -> None:
    """What the tightening keeps: leading zeros are digits, a negative number is the contract's 400 (API.md 4.1)."""
    with shared_server.client() as c:
        new_dataset(c)
        page = c.get("/v2/datasets", params={"offset": "000", "limit": "01"}).json()["data"]
        assert (page["offset"], page["limit"], page["count"]) == (0, 1, 1)
        r = c.get("/v2/datasets", params={"offset": "-1"})
        assert_error(r, 400, "invalid-input")
        assert "at least 0" in r.json()["error"]["message"]
