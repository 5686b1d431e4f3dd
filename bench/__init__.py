"""openkvs benchmarks: ``python -m bench [records] [download] [nodes] [--quick]`` (see bench/README.md)."""
