"""openkvs: a self-hosted server for the Apify key-value store API."""

__version__ = "0.1.0"
