"""A small JSON Schema checker for the schemas this package ships (model cards).

The core must run inside Slicer's Python with no extra packages, so instead of depending
on `jsonschema` this checks the subset of JSON Schema 2020-12 our schemas use: `type`,
`enum`, `const`, `properties`, `required`, `additionalProperties` (true/false), `items`,
`minItems`, `maxItems`, `uniqueItems`, `minimum`, `maximum`, `exclusiveMinimum`,
`exclusiveMaximum`, `minLength`, `maxLength`, `pattern` and local `$ref` ("#/$defs/...").
The tests check the schemas and their verdicts against the real `jsonschema` package.

Also here: `loads_limited`, JSON parsing with a nesting-depth and size limit, because a
deeply nested document makes `json.loads` raise RecursionError (or worse) instead of a
clean error.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

#: Deepest nesting of arrays/objects accepted in JSON read from users (cards, requests).
MAX_JSON_DEPTH = 32

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # Stricter than JSON Schema (which counts 16.0 as an integer): sizes feed range() and conv layers.
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)),
}


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when brackets in the JSON `text` nest deeper than `limit` (strings are skipped)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def loads_limited(text: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that refuses nesting deeper than `limit` and NaN/Infinity (ValueError)."""
    if json_depth_exceeds(text, limit):
        raise ValueError(f"nested deeper than {limit} levels")

    def no_constants(name: str):
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise ValueError(f"nested deeper than {limit} levels") from None


def _where(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(top level)"


def validate(instance: Any, schema: dict, root: dict | None = None, path: tuple = ()) -> list[str]:
    """Problems of `instance` against `schema` as 'field: what is wrong' lines (empty list: valid)."""
    root = schema if root is None else root
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return validate(instance, target, root, path)
    where = _where(path)
    problems: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_TYPES[n](instance) for n in names):
            return [f"{where}: must be {' or '.join(names)}, got {_describe(instance)}"]
    if "enum" in schema and instance not in schema["enum"]:
        return [f"{where}: must be one of {', '.join(map(repr, schema['enum']))}, got {_describe(instance)}"]
    if "const" in schema and instance != schema["const"]:
        return [f"{where}: must be {schema['const']!r}, got {_describe(instance)}"]
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if isinstance(instance, float) and not math.isfinite(instance):
            return [f"{where}: must be a finite number, got {instance}"]
        for key, ok, text in (("minimum", lambda v, b: v >= b, "at least"),
                              ("maximum", lambda v, b: v <= b, "at most"),
                              ("exclusiveMinimum", lambda v, b: v > b, "above"),
                              ("exclusiveMaximum", lambda v, b: v < b, "below")):
            if key in schema and not ok(instance, schema[key]):
                problems.append(f"{where}: must be {text} {schema[key]}, got {instance}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            problems.append(f"{where}: must not be empty" if schema["minLength"] == 1
                            else f"{where}: must be at least {schema['minLength']} characters long")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            problems.append(f"{where}: must be at most {schema['maxLength']} characters long")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            problems.append(f"{where}: {instance[:40]!r} does not match the pattern {schema['pattern']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0) or len(instance) > schema.get("maxItems", len(instance)):
            lo, hi = schema.get("minItems", 0), schema.get("maxItems")
            count = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            problems.append(f"{where}: must have {count} items, got {len(instance)}")
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in instance}) != len(instance):
            problems.append(f"{where}: items must be unique")
        if "items" in schema:
            for i, item in enumerate(instance):
                problems += validate(item, schema["items"], root, path + (i,))
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                problems.append(f"{_where(path + (key,))}: is required")
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                problems += validate(value, props[key], root, path + (key,))
            elif schema.get("additionalProperties") is False:
                problems.append(f"{_where(path + (key,))}: is not a known field")
    return problems


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "an array"
    text = repr(value)
    return f"{type(value).__name__ if not isinstance(value, str) else 'string'} {text[:40]}"
