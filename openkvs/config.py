"""Settings, declared once: each is a field of ``Settings`` below, made with ``setting()``.

From that one declaration come the flag of ``openkvs serve`` (``--max-record-bytes``), the environment variable
(``OPENKVS_MAX_RECORD_BYTES``), the parsing and checking of both, ``openkvs settings`` and the README's
configuration table (``openkvs settings --markdown``; tests/test_docs.py holds the README to it). A flag wins over
the environment, the environment over the default. Adding a setting is adding a field; a rule that ties several
settings together goes in ``Settings.validate``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openkvs import rules

GIB = 1024**3
_META = "openkvs"
_TRUE = ("1", "true", "t", "yes", "y", "on")  # what click's BOOL takes, so a flag and its variable agree
_FALSE = ("0", "false", "f", "no", "n", "off", "")


@dataclass(frozen=True, slots=True)
class _Meta:
    help: str
    choices: tuple[str, ...]
    minimum: int | None
    shown_default: str | None
    check: Callable[[Any], object] | None


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    minimum: int | None = None,
    shown_default: str | None = None,
    check: Callable[[Any], object] | None = None,
    secret: bool = False,
) -> Any:
    """One setting: its default and help, and optionally the values it takes (``choices``, ``minimum``, or a
    ``check`` that raises ValueError), how the docs show the default (markdown), and ``secret`` (kept out of
    repr). Its type is the field's annotation: str, int, float or bool."""
    meta = _Meta(help, choices, minimum, shown_default, check)
    return dataclasses.field(default=default, repr=not secret, metadata={_META: meta})


def _positive(value: float) -> None:
    if not value > 0:
        raise ValueError("must be more than 0")


LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical")  # uvicorn's, in any case


def _log_level(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}")


def _bucket_url(url: str) -> None:
    if url:
        from openkvs.storage.bucket import parse_url

        parse_url(url)


def _redis_url(url: str) -> None:
    """The schemes redis-py takes: anything else failed only in the worker's startup, with a traceback after the
    banner (and the first user's token) was printed."""
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected redis://, rediss:// or unix://")


def _trusted_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()]


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, "Port to listen on.")
    data_dir: str = setting(
        "./data",
        "Folder of the embedded storage (SQLite database and record files); on a local disk: SQLite's WAL mode "
        "does not work over a network filesystem.",
    )
    database_url: str = setting(
        "",
        "postgresql://user@host/db to keep metadata and record bytes in PostgreSQL instead of --data-dir.",
        secret=True,  # may hold a password
    )
    database_schema: str = setting("openkvs", "PostgreSQL schema that holds the openkvs tables.")
    blob_store: str = setting(
        "",
        "s3://BUCKET/PREFIX to keep the bytes of records above --blob-inline-max in an S3-compatible bucket "
        "(metadata in --database-url, or in --data-dir for a single node; one prefix per database). "
        "Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and ~/.aws/credentials.",
        check=_bucket_url,
    )
    s3_endpoint: str = setting(
        "", "http(s)://host[:port] of the S3 service (default: AWS_ENDPOINT_URL, else AWS S3 of --s3-region)."
    )
    s3_region: str = setting("", "Region of the bucket (default: AWS_REGION, ~/.aws/config, else us-east-1).")
    s3_path_style: bool = setting(
        False, "Address the bucket as ENDPOINT/BUCKET (MinIO, Ceph, Swift) instead of BUCKET.ENDPOINT."
    )
    blob_inline_max: int = setting(
        64 * 1024,
        "Records of at most this many bytes stay in the database with --blob-store; bigger ones go to the bucket.",
        minimum=0,
    )
    redis_url: str = setting(
        "", "redis://host:6379/0 to share rate-limit budgets between processes and nodes.", secret=True,
        check=_redis_url,
    )
    redis_timeout: float = setting(
        2.0,
        "Seconds to wait for Redis (connecting, an answer, a free pooled connection) before a request is let "
        "through without a rate-limit check.",
        check=_positive,
    )
    public_url: str = setting(
        "",
        "Base URL that clients reach this server at: the base of the absolute URLs openkvs returns.",
        shown_default="scheme and host of the request",
    )
    workers: int = setting(1, "Server processes on this machine.", minimum=1)
    max_record_bytes: int = setting(
        GIB, "Largest record, measured on the decoded body; larger bodies get 413.", minimum=0,
        shown_default="1 GiB (`1073741824`)",
    )
    max_header_bytes: int = setting(
        64 * 1024, "Largest request line and headers in all (a chunked body's trailer fields have a budget of their "
        "own of the same size); over it: 431.", minimum=1024
    )
    header_timeout: float = setting(
        30.0,
        "Seconds a client has to send a request's line and headers (from connecting, or from the request's first "
        "bytes on a kept-alive connection); then 408 and close.",
        check=_positive,
    )
    body_timeout: float = setting(
        60.0, "Seconds a client uploading a request body may send nothing; then 408 and the upload is dropped.",
        check=_positive,
    )
    max_connections_per_ip: int = setting(
        128, "Open connections per client IP and server process; one more gets 429 and is closed. Not applied to "
        "--trusted-proxies (behind a proxy, cap per client there); 0: no cap.", minimum=0
    )
    fsync: bool = setting(
        False, "fsync every write: survives power loss, not only a crash of the process (see Durability in the README)."
    )
    rate_limits: str = setting(
        "on", "Apify's rate limits, set by the --rate-limit-* settings; off disables them all.", choices=("on", "off")
    )
    rate_limit_user_per_minute: int = setting(250_000, "Requests a minute per user (per client IP without a token).")
    rate_limit_store_per_second: int = setting(60, "Requests a second per store.")
    rate_limit_records_per_second: int = setting(200, "Record GET/HEAD/PUT/POST/DELETE a second per store.")
    rate_limit_queue_requests_per_second: int = setting(
        400, "Request-queue single-request add/get/update/delete and lock prolong/delete a second per queue."
    )
    rate_limit_queue_batch_per_second: int = setting(
        40, "Request-queue batch add, batch delete and head/lock a second per queue."
    )
    rate_limit_push_per_second: int = setting(400, "Pushes of dataset items a second per dataset.")
    trusted_proxies: str = setting(
        "", "Comma-separated IPs/networks whose X-Forwarded-For is believed.", check=_trusted_networks
    )
    default_general_access: str = setting(
        rules.RESTRICTED,
        "What FOLLOW_USER_SETTING means for a store, dataset or request queue.",
        choices=rules.GENERAL_ACCESS_LEVELS,
    )
    rotate_signing_key_on_revoke: bool = setting(
        True,
        "Give a store, dataset or request queue a new URL-signing key when a grant is removed or lowered to READ, "
        "or it is set back to RESTRICTED: every signed link made before stops working (README: Shared links).",
    )
    log_level: str = setting(
        "info", f"Log level, one of {', '.join(LOG_LEVELS)} (one access-log line per request at info and below).",
        check=_log_level,
    )
    log_format: str = setting(
        "text", "Access-log format: text (one line) or json (one object a line); on standard output.",
        choices=("text", "json"),
    )
    metrics: str = setting(
        "token",
        "GET /metrics (Prometheus): token (any valid API token may read it), public (no token), or off (404).",
        choices=("token", "public", "off"),
    )
    shutdown_timeout: float = setting(
        30.0,
        "Seconds that open requests (downloads, uploads) get to finish after SIGTERM before the process exits; new "
        "connections are refused meanwhile, and a second SIGTERM exits at once.",
        check=_positive,
    )
    download_send_timeout: float = setting(
        60.0,
        "Seconds a ZIP download, a dataset export or a record's decoded range that holds a download slot may send "
        "nothing (a client reading less than about 1 MiB in that time) before its connection is aborted.",
        check=_positive,
    )
    max_downloads: int = setting(
        16,
        "ZIP downloads and dataset exports at once per server process (on PostgreSQL also its connections for "
        "them); more get 429 with Retry-After.",
        minimum=1,
    )
    max_downloads_per_user: int = setting(
        4,
        "ZIP downloads and dataset exports at once per user (per client IP without a token), per server process.",
        minimum=1,
    )

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, then OPENKVS_* variables, then ``overrides`` (flags that were given; None means not given)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            flag = overrides.get(s.name) if overrides else None
            source, raw = (s.flag, flag) if flag is not None else (s.env, environ.get(s.env))
            if raw is None:
                continue
            try:
                values[s.name] = s.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Each setting's own rule, then the rules between settings."""
        for s in SETTINGS:
            try:
                s.check(getattr(self, s.name))
            except ValueError as exc:
                raise ValueError(f"{s.flag}: {exc}") from None
        if self.rate_limits == "on" and (
            self.rate_limit_user_per_minute < 60
            or self.rate_limit_store_per_second < 1
            or self.rate_limit_records_per_second < 1
            or self.rate_limit_queue_requests_per_second < 1
            or self.rate_limit_queue_batch_per_second < 1
            or self.rate_limit_push_per_second < 1
        ):
            raise ValueError(
                "rate limits must allow at least 60 requests a minute per user and 1 a second per store "
                "(use --rate-limits off to disable them)"
            )

    @property
    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return _trusted_networks(self.trusted_proxies)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting as the CLI, the environment and the docs see it (derived from a field of Settings)."""

    name: str  # the field; the flag is --name-with-dashes, the variable OPENKVS_NAME
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    shown_default: str | None = None
    extra_check: Callable[[Any], object] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "OPENKVS_" + self.name.upper()

    @property
    def description(self) -> str:
        return self.help + (f" One of: {', '.join(self.choices)}." if self.choices else "")

    @property
    def default_markdown(self) -> str:
        """The default as the README's table shows it: empty when there is none."""
        if self.shown_default is not None:
            return self.shown_default
        if self.default == "":
            return ""
        return f"`{self.format(self.default)}`"

    @property
    def default_text(self) -> str:
        """The default as ``openkvs settings`` prints it."""
        return self.default_markdown.replace("`", "") or "none"

    def parse(self, raw: Any) -> Any:
        """A value of a flag or a variable, checked; text is converted to the setting's type. ValueError if bad."""
        value = self._convert(raw) if isinstance(raw, str) else raw
        self.check(value)
        return value

    def _convert(self, raw: str) -> Any:
        if self.type is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        try:
            return self.type(raw)
        except ValueError:
            raise ValueError(f"expected {_A[self.type]}, got {raw!r}") from None

    def check(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum}, got {value!r}")
        if self.extra_check is not None:
            self.extra_check(value)

    def format(self, value: Any) -> str:
        """The text that ``parse`` reads back as ``value`` (worker processes get their settings this way)."""
        if self.type is bool:
            return "true" if value else "false"
        return str(value)


_A = {str: "text", int: "an integer", float: "a number"}


def _declared() -> tuple[Setting, ...]:
    types = typing.get_type_hints(Settings)
    out = []
    for f in dataclasses.fields(Settings):
        assert _META in f.metadata, f"setting {f.name}: declare it with setting()"
        meta: _Meta = f.metadata[_META]
        assert types[f.name] in (str, int, float, bool), f"setting {f.name}: type {types[f.name]} is not parsed"
        out.append(
            Setting(f.name, types[f.name], f.default, meta.help, meta.choices, meta.minimum, meta.shown_default,
                    meta.check)
        )
    return tuple(out)


SETTINGS: tuple[Setting, ...] = _declared()
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        assert "|" not in s.description + s.default_markdown, f"setting {s.name}: a '|' would split its table row"
        lines.append(f"| `{s.flag}` | `{s.env}` | {s.default_markdown} | {s.description} |")
    return "\n".join(lines) + "\n"
