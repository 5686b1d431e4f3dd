"""An S3 bucket behind TLS: every bucket of a process shares one TLS context (openkvs/storage/bucket/s3.py
``_tls_context``), and the CA settings httpx reads (SSL_CERT_FILE) still decide whom a bucket opened after them
trusts: the shared context must not pin the CAs of the first bucket."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from openkvs.storage.bucket.s3 import BucketUnavailable, S3Bucket
from openkvs.storage.bucket.sigv4 import Credentials
from tests.cli.test_download_tls import TLSProxy
from tests.conftest import S3_BUCKET, S3_ENDPOINT, S3_ENV, s3_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )
    return crt, key


async def test_a_bucket_trusts_the_ca_file_named_when_it_is_opened(
    cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "tls_" + secrets.token_hex(6)
    s3_env(prefix)  # the test bucket exists (or skip; fail in CI)
    proxy = TLSProxy(httpx.URL(S3_ENDPOINT).port or 80, cert)  # TLS in front of the S3 server
    creds = Credentials(S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"])

    async def round_trip(key: str) -> bytes:
        b = S3Bucket(S3_BUCKET, endpoint=proxy.url, region=S3_ENV["AWS_REGION"], credentials=creds, path_style=True)
        try:
            await b.put(f"{prefix}/{key}", b"bytes of " + key.encode())
            return b"".join([piece async for piece in b.get(f"{prefix}/{key}", 0, len(b"bytes of ") + len(key))])
        finally:
            await b.aclose()

    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        with pytest.raises(BucketUnavailable, match="CERTIFICATE_VERIFY_FAILED"):  # certifi's CAs: not this one
            await round_trip("a")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
        assert await round_trip("b") == b"bytes of b"
        assert await round_trip("c") == b"bytes of c"  # the second bucket, on the kept context
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(BucketUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await round_trip("d")
    finally:
        proxy.close()
        plain = S3Bucket(S3_BUCKET, endpoint=S3_ENDPOINT, region=S3_ENV["AWS_REGION"], credentials=creds, path_style=True)
        try:
            await plain.delete([o.key async for o in plain.list(prefix + "/")])
        finally:
            await plain.aclose()
