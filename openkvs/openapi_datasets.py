"""The dataset operations of openkvs's OpenAPI description (API-datasets.md): Apify's own description of the 9
dataset operations (openapi_datasets.json: the dataset paths of apify-openapi-datasets-rq.yaml and the components
they use, Apache-2.0, converted once; regenerate with ``python -m openkvs.openapi_datasets path/to/the.yaml``),
patched to what openkvs really does: HEAD on the items, the ``X-Apify-Pagination-Desc`` header, the responses
Apify leaves out (413, 415, 503) and no 402."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from openkvs import rules
from openkvs.datasets.query import FORMATS
from openkvs.rules import MAX_QUERY_INT

DATASETS_PATH = Path(__file__).with_name("openapi_datasets.json")
PREFIX = "/v2/datasets"




def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


def _input_rules(params: dict[str, Any]) -> None:
    """What the items endpoint really takes (API-datasets.md 1 and 4.5), where Apify's description is looser: an
    integer offset and limit (not a double), a format of the seven (any case), one delimiter character other
    than a quote or a line end, XML names. An empty value is the same as none."""
    empty = {"type": "string", "maxLength": 0}
    params["limit-2"]["schema"] = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT}, empty]}
    params["limit-2"]["description"] = "Stored items to take; 0 or none: no limit."
    params["format"]["schema"] = {
        "anyOf": [{"type": "string", "pattern": "^(" + "|".join(map(_any_case, FORMATS)) + ")$"}, empty],
        "example": "json",
    }
    params["delimiter"]["schema"] = {
        "anyOf": [{"type": "string", "minLength": 1, "maxLength": 1, "not": {"enum": ['"', "\r", "\n"]}}, empty],
        "example": ";",
    }
    for name in ("xmlRoot", "xmlRow"):
        name_schema = {"type": "string", "pattern": rules.XML_NAME.pattern}
        params[name]["schema"] = {"anyOf": [name_schema, empty], "example": "items"}


def add_datasets(doc: dict[str, Any]) -> None:
    """Add the dataset paths and the components they need to ``doc`` (components it has already are kept)."""
    part = json.loads(DATASETS_PATH.read_text(encoding="utf-8"))
    _input_rules(part["components"]["parameters"])
    # a new name follows the naming rule, as at creation (Apify's description takes any string)
    update = part["components"]["schemas"]["UpdateDatasetRequest"]["properties"]
    update["name"].update({"pattern": rules.STORE_NAME.pattern, "maxLength": rules.STORE_NAME.max_length})
    for kind, entries in part["components"].items():
        target = doc["components"].setdefault(kind, {})
        for name, value in entries.items():
            target.setdefault(name, value)
    paths = part["paths"]
    ref = {"$ref": "#/components/responses/ServiceUnavailable"}
    for item in paths.values():
        for op in item.values():
            if isinstance(op, dict) and "responses" in op:
                op["responses"].pop("402", None)  # no payments here
                op["responses"].setdefault("503", ref)
    for path, method in ((PREFIX, "post"), (PREFIX + "/{datasetId}", "put"), (PREFIX + "/{datasetId}/items", "post")):
        op = paths[path][method]
        op["responses"].setdefault("413", {"$ref": "#/components/responses/PayloadTooLarge"})
        op["responses"].setdefault("415", {"$ref": "#/components/responses/UnsupportedMediaType"})
    for param in paths[PREFIX]["post"].get("parameters", []):
        if param.get("name") == "name":  # the rule of API.md 3, as for key-value stores
            param["schema"] = {
                "type": "string", "maxLength": rules.STORE_NAME.max_length,
                "anyOf": [{"pattern": rules.STORE_NAME.pattern}, {"const": ""}],
            }
    items = paths[PREFIX + "/{datasetId}/items"]
    ok = items["get"]["responses"]["200"]
    ok.setdefault("headers", {})["X-Apify-Pagination-Desc"] = {
        "description": "Whether the items are in descending order (`true` or `false`).",
        "schema": {"type": "string", "enum": ["true", "false"]},
    }
    items["head"] = {
        **{k: v for k, v in items["get"].items() if k not in ("responses", "operationId", "summary")},
        "operationId": "dataset_items_head",
        "summary": "Get items: headers only",
        "responses": {
            "200": {"description": "The headers the GET would send, no body.", "headers": ok["headers"]},
            **{code: r for code, r in items["get"]["responses"].items() if code != "200"},
        },
    }
    doc["paths"].update(paths)


def _refs(node: Any) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            ref = n.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                kind, name = ref.removeprefix("#/components/").split("/", 1)
                found.add((kind, name))
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return found


def _convert(yaml_path: str) -> None:  # pragma: no cover - a maintainer's tool
    import yaml  # only needed here, never by the server

    data = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8"))
    paths = {p: v for p, v in data["paths"].items() if p.startswith(PREFIX)}
    components: dict[str, dict[str, Any]] = {}
    todo = _refs(paths)
    done: set[tuple[str, str]] = set()
    while todo:
        kind, name = todo.pop()
        done.add((kind, name))
        value = data["components"][kind][name]
        components.setdefault(kind, {})[name] = value
        todo |= _refs(value) - done
    out = {"paths": paths, "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())}}
    DATASETS_PATH.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    _convert(sys.argv[1])
