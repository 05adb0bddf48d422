"""JSON in and out without the stdlib json module, which costs 7-9 ms per exec (it
imports re and enum).

In: pydantic_core's Rust parser, loaded anyway to validate the config.
Out: a small writer over `_json.encode_basestring`, the C string quoter behind the json
module. pydantic_core's to_json would do, but its first call imports decimal, fractions
(and so re), pathlib and uuid to recognise their types: 25 ms we would pay on every exec
to print a few dicts.
"""

from _json import encode_basestring

from cni_bridge.cni.lazyimport import import_submodule

_core = import_submodule("pydantic_core", "_pydantic_core")

ValidationError = _core.ValidationError
SchemaValidator = _core.SchemaValidator


def loads(data: bytes | str):
    """Parse JSON; raises ValueError on malformed input."""
    return _core.from_json(data)


def dumps(value, indent: int | None = None) -> bytes:
    """JSON text of dicts, lists, strings, numbers, booleans and None, as UTF-8."""
    parts: list[str] = []
    _write(value, parts, indent, 0)
    return "".join(parts).encode()


def _write(value, parts: list[str], indent: int | None, depth: int) -> None:
    if isinstance(value, str):
        parts.append(encode_basestring(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, (int, float)):
        parts.append(repr(value))
    elif isinstance(value, dict):
        _write_container(list(value.items()), "{", "}", parts, indent, depth)
    elif isinstance(value, (list, tuple)):
        _write_container(list(value), "[", "]", parts, indent, depth)
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _write_container(items: list, opening: str, closing: str, parts: list[str], indent, depth: int) -> None:
    if not items:
        parts.append(opening + closing)
        return
    if indent is None:
        separator, newline, inner, outer = ", ", "", "", ""
    else:
        separator, newline = ",", "\n"
        inner, outer = " " * (indent * (depth + 1)), " " * (indent * depth)
    parts.append(opening)
    for position, item in enumerate(items):
        if position:
            parts.append(separator)
        parts.append(newline + inner)
        if opening == "{":
            key, item = item
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            parts.append(encode_basestring(key) + ": ")
        _write(item, parts, indent, depth + 1)
    parts.append(newline + outer + closing)
