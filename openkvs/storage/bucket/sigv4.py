"""AWS Signature Version 4 for S3 requests (the header form), and where the credentials come from.

Only what an S3 client needs: the payload is sent as ``UNSIGNED-PAYLOAD`` (the body is protected by TLS and by
S3's own checks; hashing every part would cost a SHA-256 pass over every byte), the signed headers are ``host``
and the ``x-amz-*`` ones. Credentials and region follow the AWS conventions: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, else the profile ``AWS_PROFILE`` (or ``default``) of the shared
credentials file (``AWS_SHARED_CREDENTIALS_FILE``, default ``~/.aws/credentials``); the region from the setting,
``AWS_REGION``, ``AWS_DEFAULT_REGION`` or the profile's ``region`` in ``~/.aws/config`` (``AWS_CONFIG_FILE``).
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

UNSIGNED = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def _profile(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "default"


def _read_ini(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(os.path.expanduser(path))
    except configparser.Error:
        pass
    return parser


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials from the environment, else from the shared credentials file; None if there are none."""
    env = os.environ if environ is None else environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN") or None)
    ini = _read_ini(env.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path("~/.aws/credentials")))
    section = _profile(env)
    if ini.has_section(section) and ini.has_option(section, "aws_access_key_id"):
        s = ini[section]
        return Credentials(s["aws_access_key_id"], s.get("aws_secret_access_key", ""), s.get("aws_session_token"))
    return None


def load_region(setting: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if setting:
        return setting
    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"):
        return env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
    ini = _read_ini(env.get("AWS_CONFIG_FILE") or str(Path("~/.aws/config")))
    profile = _profile(env)
    section = profile if profile == "default" else f"profile {profile}"
    if ini.has_section(section) and ini.has_option(section, "region"):
        return ini[section]["region"]
    return "us-east-1"


def uri_encode(text: str, *, slash: bool) -> str:
    """Percent-encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ (and ``/`` in a path)."""
    return quote(text, safe="/-_.~" if slash else "-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class Signer:
    """Signs requests for one region and one set of credentials; the day's signing key is cached."""

    def __init__(self, credentials: Credentials, region: str, service: str = "s3") -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._key_day = ""
        self._key = b""

    def _signing_key(self, day: str) -> bytes:
        if day != self._key_day:
            k = _hmac(("AWS4" + self.credentials.secret_key).encode(), day)
            k = _hmac(k, self.region)
            k = _hmac(k, self.service)
            self._key = _hmac(k, "aws4_request")
            self._key_day = day
        return self._key

    def headers(
        self,
        method: str,
        host: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        payload_hash: str = UNSIGNED,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """The headers to send (``headers`` plus the x-amz-* and Authorization ones). ``path`` is already
        encoded (``uri_encode(..., slash=True)``) and is signed as it is sent."""
        now = now or datetime.now(UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        out = {k.lower(): v for k, v in (headers or {}).items()}
        out["host"] = host
        out["x-amz-date"] = amz_date
        out["x-amz-content-sha256"] = payload_hash
        if self.credentials.session_token:
            out["x-amz-security-token"] = self.credentials.session_token
        signed = sorted(k for k in out if k == "host" or k.startswith("x-amz-") or k == "content-md5")
        canonical_query = "&".join(
            f"{uri_encode(k, slash=False)}={uri_encode(v, slash=False)}" for k, v in sorted(query.items())
        )
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query,
                "".join(f"{k}:{' '.join(out[k].split())}\n" for k in signed),
                ";".join(signed),
                payload_hash,
            ]
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
        del out["host"]  # httpx sets it from the URL (the same value)
        return out
