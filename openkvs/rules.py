"""The input rules of the API, declared once: record keys, store names and IDs, usernames, general-access levels,
a request queue's client keys and request IDs, the XML names of a dataset export, the largest query integer, the
values of a boolean query parameter.

Each text rule is written once as an OpenAPI (ECMA-262) pattern; the Python regex is derived from it. In ECMA-262
"$" ends the text, while Python's "$" also matches before a final newline (which would let "key\\n" through): the
derived regex ends with \\Z instead. The HTTP handlers, the CLI and openapi.py all read these.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str  # for OpenAPI and JSON Schema; anchored with ^ and $
    max_length: int = sys.maxsize  # also in the pattern, or not; checked first: an overlong text fails fast
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every "$" in these patterns is an end anchor (none sits in a character class).
        object.__setattr__(self, "regex", re.compile(self.pattern.replace("$", r"\Z")))

    def ok(self, text: str) -> bool:
        return len(text) <= self.max_length and self.regex.match(text) is not None


# Apify's rule, minus "." and ".." (path segments that clients and proxies would resolve away).
RECORD_KEY = Rule(r"^(?!\.{1,2}$)[a-zA-Z0-9!_.'()-]{1,256}$", 256)
STORE_NAME = Rule(r"^([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$", 63)
USERNAME = Rule(r"^[a-zA-Z0-9_.-]{3,30}$", 30)
STORE_ID = Rule(r"^[a-zA-Z0-9]{1,64}$", 64)  # what a store ID can look like: anything else is no store's
# Request queues (API-request-queues.md): a clientKey is 1 to 32 printable ASCII characters; a request ID is what
# a queue's IDs can look like (derived ones are 15 letters and digits): anything else is no request's.
CLIENT_KEY = Rule(r"^[!-~]{1,32}$", 32)
REQUEST_ID = Rule(r"^[A-Za-z0-9]{1,64}$", 64)
# A dataset export's xmlRoot and xmlRow: an XML element name (of ASCII letters, digits and ._-).
XML_NAME = Rule(r"^[A-Za-z_][A-Za-z0-9._-]*$")

MAX_QUERY_INT = 2**53 - 1  # the largest integer a query or body takes: what every JSON client reads exactly
# A boolean query parameter's values (API.md section 1), exactly these, in this case: anything else is 400
QUERY_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
MAX_JSON_BODY = 9_437_184  # the decoded size of a JSON body (a dataset push, a batch of requests), else 413
MAX_BATCH = 25  # requests in one batch add or delete (REQUEST_QUEUE_MAX_REQUESTS_PER_BATCH_OPERATION)

# A store's generalAccess: who may read it without a token or grant. FOLLOW_USER_SETTING defers to the server's
# --default-general-access, which is one of the three levels.
FOLLOW_USER_SETTING = "FOLLOW_USER_SETTING"
RESTRICTED = "RESTRICTED"
ANYONE_WITH_ID_CAN_READ = "ANYONE_WITH_ID_CAN_READ"
ANYONE_WITH_NAME_CAN_READ = "ANYONE_WITH_NAME_CAN_READ"
GENERAL_ACCESS_LEVELS = (RESTRICTED, ANYONE_WITH_ID_CAN_READ, ANYONE_WITH_NAME_CAN_READ)
GENERAL_ACCESS = (FOLLOW_USER_SETTING, *GENERAL_ACCESS_LEVELS)  # the values of a store's generalAccess
