"""Logging set-up for the server: uvicorn's format, with API tokens and signatures redacted from every logged URL."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from uvicorn.config import LOGGING_CONFIG

# A query parameter: its name as sent (maybe percent-encoded) and its value, up to the next "&" or whitespace.
_PARAM = re.compile(r"([?&])([^=&\s]*)=([^&\s]*)")
# Credentials in a query string: the API token, and signatures (each grants reading a store or a record).
SECRET_PARAMS = frozenset(("token", "signature"))


def _redact_param(m: re.Match[str]) -> str:
    # Decoded as Starlette decodes query names (parse_qsl: "+" is a space, then %XX), so "?%74oken=" is caught too.
    return f"{m[1]}{m[2]}=REDACTED" if unquote_plus(m[2]) in SECRET_PARAMS else m[0]


def redact(text: str) -> str:
    return _PARAM.sub(_redact_param, text) if "=" in text else text


class RedactTokens(logging.Filter):
    """Access-log lines carry the request's path and query; a token or signature must never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config(level: str) -> dict[str, Any]:
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": "openkvs.logs.RedactTokens"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
    config["loggers"]["openkvs"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
