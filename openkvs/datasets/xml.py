"""XML text of rows, shared by the ``xml`` and ``rss`` formats (API-datasets.md section 6.8).

``render(out, name, value)`` appends the element(s) of one value to ``out``:

- null: ``<name/>``; a string, number or boolean: ``<name>text</name>``;
- an array: each element rendered with the same name, as siblings; an element that is itself an array becomes
  ``<name>`` + its elements rendered as ``item`` + ``</name>``; ``[]`` renders nothing;
- an object: ``<name ATTRS>CHILDREN</name>``: ATTRS from its ``@`` member when that is an object (scalars as
  text, arrays and objects as compact JSON, nulls skipped; a ``@`` that is not an object is dropped), CHILDREN
  from every other key but ``#``; when the children render to nothing, the text of ``#`` (unless absent or null)
  is the content, else the element is empty (``<name ATTRS/>``).

Names: every character outside ``[A-Za-z0-9._-]`` becomes ``_``, and a ``_`` is put before a name that does not
start with a letter or ``_``. Two attribute names that become one: the later value, at the first position.
Text: ``&`` ``<`` ``>`` as entities, and CR as ``&#13;`` (a parser would turn a raw CR into LF); in attribute
values also ``"``, TAB and LF as references (a parser would turn them into spaces). Characters XML 1.0 forbids
are removed.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

# What XML 1.0 forbids: C0 controls but TAB, LF, CR; lone surrogates; U+FFFE and U+FFFF.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ATTR_SPECIAL = re.compile("[&<>\"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]")
_NAME_START = re.compile(r"[A-Za-z_]")
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def strip_forbidden(s: str) -> str:
    return _FORBIDDEN.sub("", s)


def text(s: str) -> str:
    if _TEXT_SPECIAL.search(s) is None:
        return s
    s = _FORBIDDEN.sub("", s)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def attr(s: str) -> str:
    if _ATTR_SPECIAL.search(s) is None:
        return s
    s = _FORBIDDEN.sub("", s)
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


@lru_cache(maxsize=4096)
def name(key: str) -> str:
    out = _NAME_BAD.sub("_", key)
    return out if _NAME_START.match(out) else "_" + out


def scalar(value: Any) -> str:
    """The text of a leaf (never None): a string as is, booleans as true/false, numbers as their JSON text;
    arrays and objects as compact JSON."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    return _compact(value)


def render(out: list[str], tag: str, value: Any) -> None:
    """Append the XML of ``value`` as element(s) named ``tag`` (already a valid name) to ``out``."""
    if value is None:
        out.append(f"<{tag}/>")
    elif isinstance(value, dict):
        attrs = ""
        members = value.get("@")
        if isinstance(members, dict):
            names: dict[str, str] = {}
            for key, inner in members.items():
                if inner is not None:
                    names[name(key)] = attr(scalar(inner))
            attrs = "".join(f' {k}="{v}"' for k, v in names.items())
        at = len(out)
        out.append("")
        for key, inner in value.items():
            if key != "@" and key != "#":
                render(out, name(key), inner)
        if len(out) > at + 1:
            out[at] = f"<{tag}{attrs}>"
            out.append(f"</{tag}>")
        else:
            content = value.get("#")
            out[at] = f"<{tag}{attrs}/>" if content is None else f"<{tag}{attrs}>{text(scalar(content))}</{tag}>"
    elif isinstance(value, list):
        for element in value:
            if isinstance(element, list):
                out.append(f"<{tag}>")
                for inner in element:
                    render(out, "item", inner)
                out.append(f"</{tag}>")
            else:
                render(out, tag, element)
    else:
        out.append(f"<{tag}>{text(scalar(value))}</{tag}>")
