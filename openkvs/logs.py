"""Logging set-up for the server: uvicorn's format, with API tokens redacted from every logged URL."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


def redact(text: str) -> str:
    return _TOKEN_IN_URL.sub(r"\1REDACTED", text)


class RedactTokens(logging.Filter):
    """Access-log lines carry the request's path and query; ``?token=`` must never reach a log."""

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
