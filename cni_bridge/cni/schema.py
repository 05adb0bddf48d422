"""Validate a decoded config against a generated schema (see cni_bridge/models.py)."""

from cni_bridge.cni import wire
from cni_bridge.cni.errors import CNIError, INVALID_CONFIG


def validate_conf(schema: dict, conf: dict) -> dict:
    """Return the config reduced to the model's keys; raise CNIError(7) naming every problem."""
    try:
        return wire.SchemaValidator(schema).validate_python(conf)
    except wire.ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '<config>'}: {problem['msg']}"
            for problem in err.errors(include_url=False)
        )
        raise CNIError(INVALID_CONFIG, "invalid network config", problems) from None
