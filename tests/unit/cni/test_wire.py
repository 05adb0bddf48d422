"""wire: JSON without the json module. The stdlib json module is the oracle for what both
accept; where we decided to be stricter (NaN, Infinity, huge numbers, lone surrogates, deep
nesting), the refusals are tested one by one."""

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cni_bridge.cni import wire

ROOT = Path(__file__).resolve().parents[3]
SEED = 11
TEXT = ["", "a", "eth0", "é", "😀", "\u2028", "a\"b", "back\\slash", "tab\tnew\nline", "\x00\x1f", "\ud7ff\ue000", "/"]


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.choice(["str", "int", "float", "const", "list", "dict"] if depth < 5 else ["str", "int", "const"])
    if kind == "str":
        return rng.choice(TEXT) + str(rng.randint(0, 9))
    if kind == "int":
        return rng.choice([0, -1, 7, 2**31, 2**64, -(2**70), 10**300])
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e-7, 1.5e300, -2.25, 1e16])
    if kind == "const":
        return rng.choice([None, True, False])
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(TEXT) + str(i): random_json(rng, depth + 1) for i in range(rng.randint(0, 4))}


def test_loads_agrees_with_the_json_module():
    rng = random.Random(SEED)
    for _ in range(3000):
        value = random_json(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2, "\t"]),
                          separators=rng.choice([None, (",", ":"), (" , ", " : ")]))
        text = rng.choice(["", " ", "\n", "\r\n\t "]) + text + rng.choice(["", " ", "\n"])
        assert repr(wire.loads(text.encode())) == repr(json.loads(text)), text


@pytest.mark.parametrize(
    "text",
    [b"", b" ", b"{", b"}", b'{"a": 1,}', b"[1,]", b'{"a" 1}', b"{'a': 1}", b'{"a": tru}', b"nul", b"01", b"1.",
     b".5", b"+1", b"-", b'"\\x41"', b'"\\u12"', b'"open', b'{"a": 1} x', b"[] []", b'{"a": "\x01"}', b"\x0c{}"],
)
def test_malformed_json_is_refused_as_the_json_module_does(text):
    with pytest.raises(ValueError) as ours:
        wire.loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text.decode())
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        # Not JSON (RFC 8259), though Python's json module takes them; neither can be written back.
        (b"NaN", "NaN is not JSON"),
        (b'{"mtu": Infinity}', "Infinity is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
        (b'{"mtu": 1e400}', "number 1e400 is out of range"),
        (b"-1E+999", "number -1E+999 is out of range"),
        (b"1" * 5000, "Exceeds the limit (4300 digits)"),
        # Only UTF-8.
        (b'{"name": "\xff"}', "'utf-8' codec can't decode byte 0xff"),
        (b'"\xed\xa0\x80"', "'utf-8' codec can't decode"),  # a surrogate, encoded
        ('{}'.encode("utf-16"), "'utf-8' codec can't decode"),
        (b"\xef\xbb\xbf{}", "Expecting value: line 1 column 1 (char 0)"),  # a BOM
        # A lone surrogate from an escape.
        (b'"\\ud800"', "lone surrogate"),
        (b'{"a": ["\\udc00x"]}', "lone surrogate"),
        (b'{"\\ude00\\ud83d": 1}', "lone surrogate"),
    ],
)
def test_refused_although_the_scanner_would_parse_it(text, fragment):
    with pytest.raises(ValueError) as caught:
        wire.loads(text)
    assert fragment in str(caught.value)


def test_what_is_kept():
    assert wire.loads(b'{"a": 1, "a": 2, "b": 3}') == {"a": 2, "b": 3}  # the last value, as Go's decoder does
    assert wire.loads(b'"\\ud83d\\ude00"') == "😀"  # a surrogate pair is one character
    assert wire.loads(b'"\\\\ud800"') == "\\ud800"  # an escaped backslash, then text
    assert wire.loads(b"1e308") == 1e308 and wire.loads(b"-0") == 0 and type(wire.loads(b"-0")) is int
    assert wire.loads('{"é": "ü"}') == {"é": "ü"}  # str input too


@pytest.mark.parametrize("opening, closing", [(b"[", b"]"), (b'{"a":', b"}")])
def test_nesting_is_limited(opening, closing):
    assert wire.loads(opening * wire.MAX_DEPTH + b"1" + closing * wire.MAX_DEPTH) is not None
    for depth in (wire.MAX_DEPTH + 1, 5000, 200_000):
        with pytest.raises(ValueError, match=f"nested deeper than {wire.MAX_DEPTH} levels"):
            wire.loads(opening * depth + b"1" + closing * depth)
    with pytest.raises(ValueError):
        wire.loads(opening * 200_000)  # unterminated, too


def test_brackets_in_strings_do_not_count_as_nesting():
    value = {"a": "[" * 500, "b": [["{" * 300]]}
    assert wire.loads(json.dumps(value).encode()) == value


CHILD = r"""
import sys
from cni_bridge.cni import wire
outcomes = []
for text in sys.argv[1:]:
    try:
        outcomes.append(("ok", wire.loads(text.encode())))
    except ValueError as err:
        outcomes.append((type(err).__name__, str(err)))
print(repr((outcomes, sorted(m for m in sys.modules if m.split(".")[0] in ("json", "re")))))
"""


def test_errors_need_no_json_module():
    """In a fresh interpreter without the json module, errors still carry the json module's
    text, and json is never loaded (the scanner finds a stand-in for json.decoder)."""
    texts = ['{"a": 1,}', "[1 2]", '{"a": "x', '{"a": 1} }', "", '{"ok": [1]}']
    proc = subprocess.run([sys.executable, "-S", "-c", CHILD, *texts], cwd=ROOT, capture_output=True, text=True, check=True)
    outcomes, loaded = ast.literal_eval(proc.stdout)
    assert loaded == []
    expected = []
    for text in texts:
        try:
            expected.append(("ok", json.loads(text)))
        except json.JSONDecodeError as err:
            expected.append(("DecodeError", str(err)))
    assert outcomes == expected


@pytest.mark.parametrize("indent", [None, 4])
def test_dumps_writes_what_the_json_module_writes(indent):
    rng = random.Random(SEED)
    for _ in range(500):
        value = random_json(rng)
        assert wire.dumps(value, indent=indent) == json.dumps(value, ensure_ascii=False, indent=indent).encode()


def test_dumps_writes_a_lone_surrogate_as_its_escape():
    """An undecodable byte of the environment quoted in an error: still UTF-8, still JSON."""
    raw = wire.dumps({"details": "eth\udcff \\ \"q\"", "mix": ["é", "\ud800"]})
    assert raw == b'{"details": "eth\\udcff \\\\ \\"q\\"", "mix": ["\xc3\xa9", "\\ud800"]}'
    assert json.loads(raw.decode("utf-8")) == {"details": "eth\udcff \\ \"q\"", "mix": ["é", "\ud800"]}
