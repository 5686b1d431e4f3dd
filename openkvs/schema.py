"""Key-value store schemas (API.md section 6): checking a schema, finding a key's collection, checking a record.

A store's owner writes its ``jsonSchema``s and anyone with write access makes the server run them, so checking a
record must stay within bounds whatever the schema says:

* nothing outside the schema: a ``$ref`` resolves only within the schema itself (a registry that can't retrieve
  anything), so ``file:`` and ``http:`` references are never fetched; a schema whose references don't resolve
  that way is refused when it is set;
* regular expressions (``pattern``, ``patternProperties``) run on RE2, in time linear in the text; a pattern RE2
  can't compile (lookarounds, backreferences) is refused when the schema is set;
* work is counted: each keyword costs 1 plus the sizes of its value and of the part of the record it looks at;
  a record that needs more than ``CHECK_STEPS`` is refused (the same record and schema always give the same
  answer, however busy the machine);
* the caller runs ``check_json`` in a worker thread, off the event loop (records.py).
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import anyio.to_thread
import jsonschema
import jsonschema._keywords
import re2
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import ValidationError

from openkvs import errors, jsontext

JSON_COLLECTION_MAX = 64 * 1024 * 1024  # a record checked against a jsonSchema is parsed whole, so it is capped
# Decision (the contract is silent; Apify's schemas are a few kB): a store's schema's JSON at most this, else 400
# store-schema-invalid, as a dataset's (dataset_schema.MAX_SCHEMA_BYTES). Every look-up that reads the store row
# again reads it whole (storage/schemas.py parses it once); without this, only the body's 9 MiB bounded it.
MAX_SCHEMA_BYTES = 4 * 1024 * 1024
MESSAGE_MAX = 1000  # characters of jsonschema's message kept in the 400
CHECK_STEPS = 10_000_000  # work allowed to check one record: 15-40 s of one core of the test machine
CHECK_THREADS = 2  # records checked at once (each holds a core; more wait their turn, the event loop stays free)
# A collection's ``contentTypes`` are globs (fnmatch) matched on the event loop, in time that grows with the product
# of pattern and content type: "*???...?b" (1,000 "?") against a 60,000-character type took 43 ms, and a schema held
# thousands of them, so one PUT held every request up for minutes. A media type is at most 127 characters of type
# and 127 of subtype (RFC 6838 4.2): an entry or a record's type longer than MEDIA_TYPE_MAX names none. Decision:
# at most CONTENT_TYPES_MAX entries in a schema (Apify's have a few), so a PUT matches for tens of ms at the worst.
MEDIA_TYPE_MAX = 255
CONTENT_TYPES_MAX = 1000

# No retrieve function: a reference not found in the schema itself is Unresolvable, never fetched.
_LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry()


def _invalid(what: str) -> errors.StoreSchemaInvalid:
    return errors.StoreSchemaInvalid(f"Key-value store schema is not valid: {what}")


# -- regular expressions on RE2 ----------------------------------------------------------------------------------


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.never_capture = True  # only "does it match" is asked
    return options


_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    """A compiled pattern; raises re2.error for one RE2 can't run (or one too large for its memory budget)."""
    return re2.compile(pattern, _OPTIONS)


def _unsupported_pattern(pattern: str) -> str | None:
    try:
        _regex(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"pattern {pattern!r} is not supported by RE2 ({reason}; it has no lookarounds nor backreferences)"
    return None


class _PatternNotSupported(Exception):
    """A stored schema (set before patterns were checked) has a pattern RE2 can't run."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _search(pattern: str, text: str) -> bool:
    # RE2 matches UTF-8, which a lone surrogate (JSON's "\ud800") has no form in: it matches as U+FFFD would.
    text = _LONE_SURROGATE.sub("\ufffd", text)
    try:
        return _regex(pattern).search(text) is not None
    except re2.error:
        raise _PatternNotSupported(_unsupported_pattern(pattern)) from None


# jsonschema's own versions of these three keywords call Python's re (backtracking); these use RE2.


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator: Any, extra_schema: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)]
    if validator.is_type(extra_schema, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], extra_schema, path=extra)
    elif not extra_schema and extras:
        names = ", ".join(repr(each) for each in sorted(extras))
        if patterns:
            yield ValidationError(f"{names} do not match any of the regexes: {', '.join(map(repr, sorted(patterns)))}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({names} unexpected)")


# -- bounded work ------------------------------------------------------------------------------------------------


class _OverBudget(Exception):
    pass


_budget = threading.local()  # .left: steps this thread may still spend; absent: no limit (check_schema)


def _spend(steps: int) -> None:
    left = getattr(_budget, "left", None)
    if left is None:
        return
    if left < steps:
        raise _OverBudget()
    _budget.left = left - steps


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (list, dict)) else 0


def _metered(keyword: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    def metered(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        _spend(1 + _size(value) + _size(instance))
        yield from keyword(validator, value, instance, schema) or ()

    return metered


def _hashable(value: Any) -> Any:
    """A hashable form of a JSON value that is equal where JSON Schema's equality says so (1 == 1.0, but
    true != 1, and objects compare without order)."""
    if isinstance(value, bool):
        return (bool, value)
    if isinstance(value, list):
        return (list, tuple(_hashable(v) for v in value))
    if isinstance(value, dict):
        return (dict, frozenset((k, _hashable(v)) for k, v in value.items()))
    return value


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # jsonschema compares every pair of items that don't sort (objects): quadratic. Hashing is linear.
    if unique and validator.is_type(instance, "array"):
        # hashing is linear in the items' size, which the record's size bounds; the count is what is charged
        if len({_hashable(item) for item in instance}) != len(instance):
            yield ValidationError(f"{instance!r} has non-unique elements")


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # jsonschema divides the value by a float divisor first: an integer past a float's range (10**400) raised
    # OverflowError there. Then exact fractions, with the divisor as its shortest decimal (0.01 as written, not
    # the binary float nearest to it, of which no integer is a multiple).
    try:
        # a generator: the stub of this private module says it returns None
        yield from jsonschema._keywords.multipleOf(validator, divisor, instance, schema)  # type: ignore[misc,func-returns-value]
    except OverflowError:
        if (Fraction(instance) / Fraction(repr(divisor))).denominator != 1:
            yield ValidationError(f"{instance!r} is not a multiple of {divisor}")


def _hardened(base: Any) -> Any:
    """``base`` (a jsonschema validator class) with RE2 patterns, linear uniqueItems, exact multipleOf, and every
    keyword metered against the work budget."""
    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # the stubs leave extend() untyped
        base,
        validators={
            name: _metered(keyword)
            for name, keyword in {
                **base.VALIDATORS,
                "pattern": _pattern,
                "patternProperties": _pattern_properties,
                "additionalProperties": _additional_properties,
                "uniqueItems": _unique_items,
                "multipleOf": _multiple_of,
            }.items()
        },
    )


_Validator = _hardened(jsonschema.Draft7Validator)
# (a dataset's fields schema may declare 2020-12: the same keywords mean the same there)
_Validator2020 = _hardened(jsonschema.Draft202012Validator)


# -- the store schema --------------------------------------------------------------------------------------------


def validate_schema(schema: Any) -> dict[str, Any] | None:
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise _invalid("it must be an object")
    size = jsontext.stored_size(schema)
    if size > MAX_SCHEMA_BYTES:
        raise _invalid(f"it is {size:,} bytes of JSON, more than {MAX_SCHEMA_BYTES:,}")
    try:  # stored as JSON text: PostgreSQL can't hold NUL, and a lone surrogate has no UTF-8 form
        jsontext.check_storable(schema)
    except jsontext.InvalidJson as exc:
        raise _invalid(str(exc)) from None
    if schema.get("actorKeyValueStoreSchemaVersion") != 1:
        raise _invalid("actorKeyValueStoreSchemaVersion must be 1")
    for field in ("title", "description"):
        if field in schema and not isinstance(schema[field], str):
            raise _invalid(f"{field} must be a string")
    collections = schema.get("collections", {})
    if not isinstance(collections, dict):
        raise _invalid("collections must be an object")
    content_types = 0
    for cid, spec in collections.items():
        if not isinstance(spec, dict):
            raise _invalid(f"collection '{cid}' must be an object")
        has_key, has_prefix = "key" in spec, "keyPrefix" in spec
        if has_key == has_prefix:
            raise _invalid(f"collection '{cid}' needs exactly one of key and keyPrefix")
        value = spec["key"] if has_key else spec["keyPrefix"]
        if not isinstance(value, str) or (has_key and not value):
            raise _invalid(f"collection '{cid}': key/keyPrefix must be a string")
        types = spec.get("contentTypes")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            raise _invalid(f"collection '{cid}': contentTypes must be a list of strings")
        if types is not None and any(len(t) > MEDIA_TYPE_MAX for t in types):
            raise _invalid(f"collection '{cid}': a content type has at most {MEDIA_TYPE_MAX} characters")
        content_types += len(types or ())
        if content_types > CONTENT_TYPES_MAX:
            raise _invalid(f"the collections have more than {CONTENT_TYPES_MAX} contentTypes in all")
        if "jsonSchema" in spec:
            if types != ["application/json"]:
                raise _invalid(f"collection '{cid}': jsonSchema needs contentTypes [\"application/json\"]")
            problem = _json_schema_problem(spec["jsonSchema"])
            if problem:
                raise _invalid(f"collection '{cid}': jsonSchema: {problem}")
    return schema


def _json_schema_problem(json_schema: Any, draft2020: bool = False) -> str | None:
    """What makes a JSON Schema unusable here, or None: not valid draft 7 (or 2020-12), a ``$ref`` (or
    ``$dynamicRef``) that doesn't resolve within the schema (a remote one would make the server fetch URLs of the
    schema author's choosing), a pattern RE2 can't run. And for 2020-12, ``unevaluatedProperties`` beside
    ``patternProperties``: jsonschema evaluates those two together with Python's backtracking re, not RE2."""
    base, spec = (
        (jsonschema.Draft202012Validator, referencing.jsonschema.DRAFT202012)
        if draft2020
        else (jsonschema.Draft7Validator, referencing.jsonschema.DRAFT7)
    )
    try:
        base.check_schema(json_schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    except RecursionError:  # bodies are capped at jsontext.MAX_DEPTH, below this; kept for other callers
        return "it is nested too deeply"
    if isinstance(json_schema, bool):
        return None
    root = spec.create_resource(json_schema)
    stack = [(_LOCAL_ONLY.resolver_with_root(root), root)]
    keywords: set[str] = set()
    in_place: dict[int, list[Any]] = {}  # subschema -> those applied to the same value (see _endless)
    while stack:  # every subschema, with the base URI its references resolve against
        resolver, resource = stack.pop()
        node = resource.contents
        if not isinstance(node, dict):
            continue
        keywords.update(node)
        same = in_place.setdefault(id(node), [])
        for key in ("allOf", "anyOf", "oneOf"):
            same += [sub for sub in node.get(key) or () if isinstance(sub, dict)]
        same += [node[key] for key in ("not", "if", "then", "else") if isinstance(node.get(key), dict)]
        for key in ("dependentSchemas", "dependencies"):
            if isinstance(node.get(key), dict):
                same += [sub for sub in node[key].values() if isinstance(sub, dict)]
        for ref in (node.get("$ref"), node.get("$dynamicRef")):
            if isinstance(ref, str):
                try:
                    same.append(resolver.lookup(ref).contents)
                except referencing.exceptions.Unresolvable:
                    return f"$ref {ref!r} does not resolve within the schema (only local references are allowed)"
        patterns = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        patterns += list(node.get("patternProperties") or {})
        for pattern in patterns:
            problem = _unsupported_pattern(pattern)
            if problem:
                return problem
        stack.extend((resolver.in_subresource(sub), sub) for sub in resource.subresources())
    if draft2020 and {"unevaluatedProperties", "patternProperties"} <= keywords:
        return "unevaluatedProperties with patternProperties is not supported (their patterns would run unbounded)"
    if _endless(in_place):
        return "a $ref leads back to itself without going into the value (checking any value would never end)"
    return None


def _endless(in_place: dict[int, list[Any]]) -> bool:
    """Whether a chain of subschemas applied to one and the same value (allOf/anyOf/oneOf, not, if/then/else,
    dependentSchemas and references) comes back to where it began: ``{"$ref": "#"}`` checked a value by checking
    it again until Python's recursion limit, for every value. A reference inside ``properties`` or ``items`` goes
    into the value and ends with it (a tree's schema): not a cycle."""
    state: dict[int, int] = {}  # 1: on the chain being followed, 2: done
    for start in in_place:
        if start in state:
            continue
        chain = [(start, iter(in_place[start]))]
        state[start] = 1
        while chain:
            node, rest = chain[-1]
            sub = next(rest, None)
            if sub is None:
                state[node] = 2
                chain.pop()
            elif state.get(id(sub)) == 1:
                return True
            elif id(sub) not in state:
                state[id(sub)] = 1
                chain.append((id(sub), iter(in_place.get(id(sub), ()))))
    return False


def collections_for_key(schema: dict[str, Any] | None, key: str) -> list[tuple[str, dict[str, Any]]]:
    if not schema:
        return []
    found = []
    for cid, spec in (schema.get("collections") or {}).items():
        if spec.get("key") == key or ("keyPrefix" in spec and key.startswith(spec["keyPrefix"])):
            found.append((cid, spec))
    return found


def check_content_type(cid: str, spec: dict[str, Any], content_type: str) -> None:
    types = spec.get("contentTypes")
    if not types:
        return
    bare = content_type.split(";")[0].strip().lower()
    # (the lengths bound each match's work, also for a schema stored before MEDIA_TYPE_MAX was checked)
    if len(bare) > MEDIA_TYPE_MAX or not any(
        len(t) <= MEDIA_TYPE_MAX and fnmatch.fnmatchcase(bare, t.lower()) for t in types
    ):
        shown = bare if len(bare) <= MEDIA_TYPE_MAX else bare[:MEDIA_TYPE_MAX] + "..."
        raise errors.SchemaValidationFailed(
            f"Record content type '{shown}' is not allowed in collection '{cid}' (allowed: {', '.join(types)})."
        )


def check_json(cid: str, spec: dict[str, Any], data: bytes) -> None:
    """Raise SchemaValidationFailed unless ``data`` is JSON that matches the collection's jsonSchema. CPU-bound
    (up to CHECK_STEPS): call it in a worker thread."""
    try:
        value = jsontext.loads(data)
    except jsontext.TooDeep as exc:
        raise errors.SchemaValidationFailed(f"Record in collection '{cid}' is not accepted: {exc}") from None
    except jsontext.InvalidJson:
        raise errors.SchemaValidationFailed(f"Record in collection '{cid}' is not valid JSON.") from None
    validator = _Validator(spec["jsonSchema"], registry=_LOCAL_ONLY)
    _budget.left = CHECK_STEPS
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except _OverBudget:
        raise errors.SchemaValidationFailed(
            f"Record in collection '{cid}' takes too much work to check against its schema "
            f"(over {CHECK_STEPS:,} steps)."
        ) from None
    except referencing.exceptions.Unresolvable as exc:  # a schema stored before references were checked
        raise errors.SchemaValidationFailed(
            f"The schema of collection '{cid}' has a $ref that does not resolve within it: {exc}"
        ) from None
    except _PatternNotSupported as exc:
        raise errors.SchemaValidationFailed(f"The schema of collection '{cid}' can't be used: {exc}") from None
    except RecursionError:  # a schema whose references loop (e.g. {"$ref": "#"}) or nest past the stack
        raise errors.SchemaValidationFailed(
            f"The schema of collection '{cid}' recurses too deeply to check this record."
        ) from None
    finally:
        del _budget.left
    if error is not None:
        message = error.message  # jsonschema quotes the value whole, and the record may be megabytes
        if len(message) > MESSAGE_MAX:
            message = message[: MESSAGE_MAX - 3] + "..."
        raise errors.SchemaValidationFailed(f"Record does not match the schema of collection '{cid}': {message}")


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


async def check_json_off_loop(cid: str, spec: dict[str, Any], data: bytes) -> None:
    """check_json in a worker thread: while it parses and validates (in pure Python, so the GIL is handed back
    every few milliseconds) the event loop answers everyone else."""
    await _off_loop(check_json, cid, spec, data)


async def validate_schema_off_loop(schema: Any) -> dict[str, Any] | None:
    """validate_schema in a worker thread (a schema may be a body of 9 MiB to check against the metaschema)."""
    return await _off_loop(validate_schema, schema)  # type: ignore[no-any-return]


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a worker thread, at most CHECK_THREADS at once (each holds a core; more wait their turn)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(CHECK_THREADS)
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
