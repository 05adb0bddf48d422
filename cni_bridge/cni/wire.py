"""JSON in and out without the stdlib json module, which costs 7-9 ms per exec (it
imports re and enum).

In: the C scanner behind the json module (`_json.make_scanner`), driven directly, on
UTF-8 input. Besides what it checks itself, we refuse NaN and Infinity and numbers too
large for a float (not JSON; Go's decoder in the runtime refuses them too), strings with
a lone surrogate from a \\u escape (they cannot be written back as UTF-8), and nesting
deeper than MAX_DEPTH. A repeated key keeps its last value, as in Go's decoder.
Out: a small writer over `_json.encode_basestring`, the C string quoter behind the json
module.
"""

import sys
from _json import encode_basestring, make_scanner

MAX_DEPTH = 200
WHITESPACE = " \t\n\r"


class DecodeError(ValueError):
    """Malformed JSON, with the position as the json module reports it."""

    def __init__(self, msg: str, doc: str, pos: int):
        line = doc.count("\n", 0, pos) + 1
        column = pos - doc.rfind("\n", 0, pos)
        super().__init__(f"{msg}: line {line} column {column} (char {pos})")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class _ScannerContext:
    """The settings make_scanner reads from a json.JSONDecoder."""

    strict = True  # control characters in strings are errors
    object_hook = None
    object_pairs_hook = None
    parse_int = int
    parse_float = staticmethod(_finite_float)
    parse_constant = staticmethod(_refuse_constant)


_scan = make_scanner(_ScannerContext)
# The scanner reports malformed input as json.decoder.JSONDecodeError, which it looks up
# in sys.modules (imports, from Python 3.12 on). Unless the json package is loaded
# already, a stand-in module provides that class while we scan.
_DECODER_STAND_IN = type(sys)("json.decoder")
_DECODER_STAND_IN.JSONDecodeError = DecodeError


def loads(data: bytes | str):
    """Parse one JSON document; raises ValueError if it is not one (see above)."""
    text = data.decode() if isinstance(data, bytes) else data  # UnicodeDecodeError is a ValueError
    start = len(text) - len(text.lstrip(WHITESPACE))
    stand_in = "json.decoder" not in sys.modules
    if stand_in:
        sys.modules["json.decoder"] = _DECODER_STAND_IN
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise DecodeError("Expecting value", text, stop.value) from None
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        if stand_in and sys.modules.get("json.decoder") is _DECODER_STAND_IN:
            del sys.modules["json.decoder"]
    rest = text[end:].lstrip(WHITESPACE)
    if rest:
        raise DecodeError("Extra data", text, len(text) - len(rest))
    # Cheap tests on the text first: few configs have an escape or 200 brackets.
    if "\\u" in text or text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth_and_strings(value)
    return value


def _check_depth_and_strings(value) -> None:
    """Raise ValueError on what the scanner lets through: nesting deeper than MAX_DEPTH,
    and lone surrogates. Iterative, so that depth cannot exhaust the stack here."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if type(item) is str:
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff)") from None
        elif type(item) in (dict, list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            children = [*item, *item.values()] if type(item) is dict else item
            pending.extend((child, depth + 1) for child in children)


def dumps(value, indent: int | None = None) -> bytes:
    """JSON text of dicts, lists, strings, numbers, booleans and None, as UTF-8.

    A lone surrogate (an undecodable byte of the environment, in an error message) is
    written as its \\u escape, so that the output is always JSON and always UTF-8.
    """
    parts: list[str] = []
    _write(value, parts, indent, 0)
    return "".join(parts).encode("utf-8", "backslashreplace")


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
