"""Settings: one table drives the command-line flags, the OPENKVS_* environment variables and the docs.

Each setting is a flag of ``openkvs serve`` (``--max-record-bytes``) and an environment variable
(``OPENKVS_MAX_RECORD_BYTES``); a flag wins over the environment, the environment over the default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # the dataclass field; the flag is --name-with-dashes, the env var OPENKVS_NAME
    default: Any
    help: str
    cast: type = str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "OPENKVS_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address to listen on."),
    Setting("port", 8000, "Port to listen on.", int),
    Setting("data_dir", "./data", "Folder of the embedded storage (SQLite database and record files)."),
    Setting(
        "database_url",
        "",
        "postgresql://user@host/db to keep metadata and record bytes in PostgreSQL instead of --data-dir.",
    ),
    Setting("database_schema", "openkvs", "PostgreSQL schema that holds the openkvs tables."),
    Setting("redis_url", "", "redis://host:6379/0 to share rate-limit budgets between processes and nodes."),
    Setting("public_url", "", "Base URL that clients reach this server at; default: scheme and host of the request."),
    Setting("workers", 1, "Number of server processes.", int),
    Setting("max_record_bytes", GIB, "Largest record, measured on the decoded body.", int),
    Setting("max_header_bytes", 64 * 1024, "Largest request line and headers in all; over it: 431.", int),
    Setting("header_timeout", 30.0, "Seconds a client has to send a request's line and headers; then 408.", float),
    Setting("max_connections_per_ip", 128, "Open connections per client IP (not --trusted-proxies); 0: no cap.", int),
    Setting("fsync", False, "fsync every write: survives power loss, not only a crash of the process.", bool),
    Setting("rate_limits", "on", "'on' or 'off': Apify's rate limits (section 7 of the API contract)."),
    Setting("rate_limit_user_per_minute", 250_000, "Requests a minute per user (per IP without a token).", int),
    Setting("rate_limit_store_per_second", 60, "Requests a second per store.", int),
    Setting("rate_limit_records_per_second", 200, "Record GET/HEAD/PUT/POST/DELETE a second per store.", int),
    Setting("trusted_proxies", "", "Comma-separated IPs/networks whose X-Forwarded-For is believed."),
    Setting(
        "default_general_access",
        "RESTRICTED",
        "What FOLLOW_USER_SETTING means: RESTRICTED, ANYONE_WITH_ID_CAN_READ or ANYONE_WITH_NAME_CAN_READ.",
    ),
    Setting("log_level", "info", "Log level: debug, info, warning, error."),
    Setting("download_send_timeout", 60.0, "Seconds a ZIP download may make no progress before it is aborted.", float),
    Setting("max_downloads", 16, "Concurrent ZIP downloads per server process; more get 429.", int),
    Setting("max_downloads_per_user", 4, "Concurrent ZIP downloads per user (per IP without a token).", int),
)


def _parse(setting: Setting, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    if setting.cast is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{setting.env}: expected true or false, got {raw!r}")
    try:
        return setting.cast(raw)
    except ValueError as exc:
        raise ValueError(f"{setting.env}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    database_url: str = field(default="", repr=False)  # may hold a password
    database_schema: str = "openkvs"
    redis_url: str = field(default="", repr=False)
    public_url: str = ""
    workers: int = 1
    max_record_bytes: int = GIB
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 30.0
    max_connections_per_ip: int = 128
    fsync: bool = False
    rate_limits: str = "on"
    rate_limit_user_per_minute: int = 250_000
    rate_limit_store_per_second: int = 60
    rate_limit_records_per_second: int = 200
    trusted_proxies: str = ""
    default_general_access: str = "RESTRICTED"
    log_level: str = "info"
    download_send_timeout: float = 60.0
    max_downloads: int = 16
    max_downloads_per_user: int = 4

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, then OPENKVS_* variables, then ``overrides`` (flags that were given; None means not given)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            if s.env in environ:
                values[s.name] = _parse(s, environ[s.env])
            if overrides and overrides.get(s.name) is not None:
                values[s.name] = _parse(s, overrides[s.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.rate_limits not in ("on", "off"):
            raise ValueError("rate_limits must be 'on' or 'off'")
        if self.default_general_access not in (
            "RESTRICTED",
            "ANYONE_WITH_ID_CAN_READ",
            "ANYONE_WITH_NAME_CAN_READ",
        ):
            raise ValueError(f"default_general_access: unknown value {self.default_general_access!r}")
        if self.max_record_bytes < 0 or self.workers < 1:
            raise ValueError("max_record_bytes must be >= 0 and workers >= 1")
        if self.max_header_bytes < 1024 or self.header_timeout <= 0 or self.max_connections_per_ip < 0:
            raise ValueError("max_header_bytes must be >= 1024, header_timeout > 0 and max_connections_per_ip >= 0")
        if self.rate_limits == "on" and (
            self.rate_limit_user_per_minute < 60
            or self.rate_limit_store_per_second < 1
            or self.rate_limit_records_per_second < 1
        ):
            raise ValueError(
                "rate limits must allow at least 60 requests a minute per user and 1 a second per store "
                "(use --rate-limits off to disable them)"
            )
        if self.download_send_timeout <= 0 or self.max_downloads < 1 or self.max_downloads_per_user < 1:
            raise ValueError("download_send_timeout must be > 0, max_downloads and max_downloads_per_user >= 1")
        self.trusted_networks  # parses, so a typo fails at start-up

    @property
    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p.strip(), strict=False) for p in self.trusted_proxies.split(",") if p.strip()]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


assert [s.name for s in SETTINGS] == [f.name for f in dataclasses.fields(Settings)], "SETTINGS and Settings differ"
