"""The README stays true to the code: every setting and every CLI command is documented there."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from openkvs.cli import main
from openkvs.config import SETTINGS, markdown_table

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_readme_configuration_table_is_the_declared_settings() -> None:
    start = README.index("| flag | environment |")
    table = README[start : README.index("\n\n", start) + 1]
    assert table == markdown_table(), "regenerate the README's table with: openkvs settings --markdown"


def test_every_serve_flag_is_a_setting() -> None:
    serve = main.commands["serve"]
    flags = {opt for p in serve.params for opt in p.opts if opt.startswith("--")}
    assert flags == {s.flag for s in SETTINGS}


def test_every_command_is_in_the_readme() -> None:
    for name, command in main.commands.items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for sub in subcommands:
                assert f"openkvs {name} {sub}" in README or f"{name} {sub}" in README, (name, sub)
        else:
            assert f"openkvs {name}" in README, name
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and result.output.strip()



ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# where a path in a document may start: the repository, or (in docs/scaling.md's lists of modules) the package
PLACES = [ROOT, ROOT / "openkvs", ROOT / "openkvs" / "storage"]


def _named_files(doc: Path) -> list[tuple[str, list[Path]]]:
    """The repository's files a document names, each with the places it may be: its relative links, code spans that
    are a path (a / and a file's suffix), and any *.md name (issue 13: "contract: `API-datasets.md`", a file that
    is not in the repository)."""
    import re

    text = doc.read_text()
    named = [(link, [doc.parent / link.split("#")[0]]) for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)]
    for span in re.findall(r"`([^`\s]+)`", text):
        if re.fullmatch(r"[\w-]+(/[\w.-]+)+\.(py|md|sh|toml|jsonl?|lock|service)", span):
            named.append((span, [place / span for place in PLACES]))
    for name in re.findall(r"(?<![\w/.:-])([\w-]+\.md)\b", text):
        named.append((name, [doc.parent / name, ROOT / name]))
    return named


def test_the_files_the_docs_name_are_in_the_repository() -> None:
    missing = [(doc.name, name) for doc in DOCS for name, places in _named_files(doc)
               if not any(p.exists() for p in places)]
    assert not missing, missing
    # the extraction finds what it should: a silent regex would pass on nothing
    names = {name for doc in DOCS for name, _ in _named_files(doc)}
    assert {"deploy/openkvs.service", "docs/sdk.md", "tests/compat/test_sdk.py", "BENCHMARKS.md"} <= names, names


def _section(title: str) -> str:
    start = README.index(title)
    return README[start : README.index("\n#", start + len(title))]


def test_the_readme_limits_are_the_codes() -> None:
    """The limits openkvs chose where Apify's API is silent, as the README states them, are the ones the code
    enforces (each stated once, in "Limits of openkvs's own")."""
    from openkvs import jsontext, schema
    from openkvs.api import items
    from openkvs.datasets import pipeline

    limits = _section("### Limits of openkvs's own")
    stated = {
        "schema": f"at most {schema.MAX_SCHEMA_BYTES // 2**20} MiB ({schema.MAX_SCHEMA_BYTES:,} bytes) of\n  compact JSON",
        "flatten": f"more than {pipeline.MAX_FLATTENED_KEYS // 2**20} MiB of characters "
                   f"({pipeline.MAX_FLATTENED_KEYS:,}",
        "unwind": f"at most {items.MAX_HEADER_SCAN_CELLS:,} cells",
        "depth": f"nest at most {jsontext.MAX_DEPTH} levels, a dataset push's {items.ITEM_MAX_DEPTH}, a request\n"
                 f"  queue's requests {jsontext.BODY_MAX_DEPTH};",
        "steps": f"{schema.CHECK_STEPS // 10**6} million validation steps",
    }
    assert {what: text for what, text in stated.items() if text not in limits} == {}
    # the schema and flatten caps are stated once in the README: in this section
    for figure in (f"{schema.MAX_SCHEMA_BYTES:,}", f"{pipeline.MAX_FLATTENED_KEYS:,}"):
        assert README.count(figure) == 1, figure


def _python_blocks(doc: Path) -> list[str]:
    import re
    import textwrap

    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)]


def test_the_docs_shared_mode_crawler_loads_as_written(tmp_path: Path) -> None:
    """docs/distributed-crawl.md's crawler, as written but for its last line (``asyncio.run(main())``): what it
    imports is in the SDK and the Crawlee extra the docs name, and the SDK's storage client takes the shared mode.
    docs/sdk.md's shared-mode snippet sets the storage client with the same lines. (A crawl with them is
    tests/compat/test_crawlee.py's, in the slow tier.)"""
    import subprocess
    import sys

    import pytest

    crawler = next(b for b in _python_blocks(ROOT / "docs" / "distributed-crawl.md") if "ParselCrawler" in b)
    snippet = next(b for b in _python_blocks(ROOT / "docs" / "sdk.md") if 'request_queue_access="shared"' in b)
    setup = snippet[snippet.index("service_locator.set_storage_client(") : snippet.index("async def main")].strip()
    assert setup in crawler
    assert crawler.rstrip().endswith("asyncio.run(main())")
    pytest.importorskip("apify")
    pytest.importorskip("parsel")  # crawlee[parsel], as docs/distributed-crawl.md says to install
    (tmp_path / "crawler.py").write_text(
        crawler.replace("asyncio.run(main())", "")
        + "\nimport inspect\n"
        "queues = service_locator.get_storage_client()._cloud_storage_client._request_queue_access\n"
        "print(queues, inspect.iscoroutinefunction(main))\n"
    )
    out = subprocess.run([sys.executable, "crawler.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "shared True", out.stdout


def test_the_schema_versions_the_docs_name_are_the_codes() -> None:
    """docs/scaling.md says which schema version adds the bucket's tables; a migration inserted before them moves it."""
    from openkvs.storage.postgres.tables import MIGRATIONS
    from openkvs.storage.sqlite.tables import UPGRADES, UPLOADS_TABLE

    scaling = " ".join((ROOT / "docs" / "scaling.md").read_text().split())  # (lines joined)
    sqlite_version = UPGRADES.index(UPLOADS_TABLE) + 2  # UPGRADES[i] makes version i + 2
    assert f"(SQLite schema {sqlite_version})" in scaling
    postgres_version = next(i + 1 for i, sql in enumerate(MIGRATIONS) if "CREATE TABLE uploads" in sql)
    assert f"tables in migration {postgres_version} (`postgres/tables.py`)" in scaling
