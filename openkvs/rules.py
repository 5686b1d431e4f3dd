"""The input rules of the API, declared once: record keys, store names and IDs, usernames, general-access levels.

Each text rule is written once as an OpenAPI (ECMA-262) pattern; the Python regex is derived from it. In ECMA-262
"$" ends the text, while Python's "$" also matches before a final newline (which would let "key\\n" through): the
derived regex ends with \\Z instead. The HTTP handlers, the CLI and openapi.py all read these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str  # for OpenAPI and JSON Schema; anchored with ^ and $
    max_length: int  # also in the pattern, or not; checked first: an overlong text fails fast
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

# A store's generalAccess: who may read it without a token or grant. FOLLOW_USER_SETTING defers to the server's
# --default-general-access, which is one of the three levels.
FOLLOW_USER_SETTING = "FOLLOW_USER_SETTING"
RESTRICTED = "RESTRICTED"
ANYONE_WITH_ID_CAN_READ = "ANYONE_WITH_ID_CAN_READ"
ANYONE_WITH_NAME_CAN_READ = "ANYONE_WITH_NAME_CAN_READ"
GENERAL_ACCESS_LEVELS = (RESTRICTED, ANYONE_WITH_ID_CAN_READ, ANYONE_WITH_NAME_CAN_READ)
GENERAL_ACCESS = (FOLLOW_USER_SETTING, *GENERAL_ACCESS_LEVELS)  # the values of a store's generalAccess
