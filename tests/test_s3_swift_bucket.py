"""`deploy/s3-swift.sh bucket NAME` (what the README's S3 section gives for trying a bucket on one machine) makes a
bucket that S3 requests with the README's credentials then find: a newcomer needs no S3 client of their own."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from openkvs.storage.bucket.sigv4 import Credentials, Signer
from tests.conftest import S3_ENDPOINT, S3_ENV, unavailable

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "s3-swift.sh"


def test_the_script_makes_a_bucket_s3_finds() -> None:
    url = httpx.URL(S3_ENDPOINT)
    if url.host != "127.0.0.1" or url.scheme != "http":
        pytest.skip(f"the tests' S3 server ({S3_ENDPOINT}) is not the script's")
    signer = Signer(Credentials(S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"]), S3_ENV["AWS_REGION"])
    host, name = url.netloc.decode(), f"try-{uuid.uuid4().hex[:12]}"

    def s3(method: str) -> httpx.Response:
        return httpx.request(method, f"{S3_ENDPOINT}/{name}", headers=signer.headers(method, host, f"/{name}", {}),
                             timeout=10)

    try:
        assert s3("HEAD").status_code == 404
    except httpx.TransportError as exc:
        unavailable(f"S3 not reachable at {S3_ENDPOINT} (deploy/s3-swift.sh start): {exc}")
    made = subprocess.run(["bash", str(SCRIPT), "bucket", name], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "S3_PORT": str(url.port)})
    try:
        assert made.returncode == 0, made.stderr
        assert s3("HEAD").status_code == 200
    finally:
        s3("DELETE")
