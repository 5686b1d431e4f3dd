"""Query values and request fields of the queue API at their edges (API-request-queues.md sections 1 and 5.12-5.13):
each refused with the contract's 400 and nothing changed, never a 500."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import assert_error
from .test_queues_attack import Q, new_queue, req, total

if TYPE_CHECKING:
    from tests.conftest import Server


def test_lock_secs_of_thousands_of_digits_is_400(shared_server: Server) -> None:
    """Python's int() refuses text of more than 4,300 digits: lockSecs of 5,000 nines was a 500 (both lock calls)."""
    with shared_server.client() as c:
        qid = new_queue(c)
        rid = c.post(f"{Q}/{qid}/requests", json=req()).json()["data"]["requestId"]
        for secs in ("9" * 5000, "0" * 4999 + "5"):
            assert_error(c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": secs}), 400, "invalid-input")
            assert_error(c.put(f"{Q}/{qid}/requests/{rid}/lock", params={"lockSecs": secs}), 400, "invalid-input")
        assert "lockExpiresAt" not in c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]


def test_handled_at_with_an_offset_beyond_a_day_is_400(shared_server: Server) -> None:
    """RFC 3339 offsets are hours 00-23 and minutes 00-59: ``+99:99`` was taken as 100 h 39 min and stored."""
    with shared_server.client() as c:
        qid = new_queue(c)
        for stamp in ("2026-01-01T00:00:00+99:99", "2026-01-01T00:00:00-24:00", "2026-01-01T00:00:00+00:60"):
            r = c.post(f"{Q}/{qid}/requests", json=req(handledAt=stamp))
            assert_error(r, 400, "invalid-input")
        assert total(c, qid) == 0
        r = c.post(f"{Q}/{qid}/requests", json=req(handledAt="2026-01-01T00:00:00-23:59"))
        assert r.status_code == 201
        rid = r.json()["data"]["requestId"]
        assert c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]["handledAt"] == "2026-01-01T23:59:00.000Z"
