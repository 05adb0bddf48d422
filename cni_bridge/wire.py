"""JSON in and out, through pydantic_core's Rust codec.

The stdlib json module costs 7-9 ms per exec (it imports re and enum); pydantic_core is
loaded anyway to validate the config, and its from_json/to_json cost nothing extra.
"""

from cni_bridge.lazyimport import import_submodule

_core = import_submodule("pydantic_core", "_pydantic_core")

ValidationError = _core.ValidationError
SchemaValidator = _core.SchemaValidator


def loads(data: bytes | str):
    """Parse JSON; raises ValueError on malformed input."""
    return _core.from_json(data)


def dumps(value, indent: int | None = None) -> bytes:
    return _core.to_json(value, indent=indent)
