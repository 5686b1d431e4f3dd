"""From stored dataset items to export bytes (API-datasets.md sections 4.5, 4.6, 5 and 6): pure code, no storage,
no HTTP, no asyncio.

    query.py     the items endpoint's query parameters, parsed and validated in one place -> ItemsQuery
    pipeline.py  Shape: one stored item -> its output rows (section 5)
    columns.py   cells of a row, the columns of tabular formats (6.1, 6.2), the per-item path index behind them
    stats.py     field statistics (4.6)
    formats.py   one Renderer per format: json, jsonl, csv, html, xml, rss (6.3-6.9)
    xml.py       the XML element rendering shared by xml and rss (6.8)
    xlsx.py      the xlsx workbook as a streamed ZIP (6.7)
"""
