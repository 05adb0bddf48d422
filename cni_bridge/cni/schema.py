"""Validate a decoded config against a schema generated from the pydantic models.

cni_bridge/_schemas.py holds one schema per model of cni_bridge/models.py, written by
`python -m cni_bridge.schemagen`. A schema is a tree of tuples:

    ('typed-dict', {key: (required, node), ...})   an object; keys not listed are dropped
    ('list', node, min_length or None)
    ('str', min_length or None, max_length or None)
    ('int', ge, le)
    ('bool',)
    ('literal', (str, ...))
    ('dict',)                                      any object, kept as it is

Validation is strict, as the models' config says: no conversion between JSON types (1.0,
"1" and true are not ints). Every problem is reported, with pydantic's own location and
message, and tests/unit/cni/test_schema.py holds this module to pydantic's answers.
"""

from cni_bridge.cni.errors import CNIError, INVALID_CONFIG


def validate_conf(schema: tuple, conf) -> dict:
    """Return the config reduced to the model's keys; raise CNIError(7) naming every problem."""
    problems: list[tuple[tuple, str]] = []
    valid = validate(schema, conf, (), problems)
    if problems:
        raise CNIError(INVALID_CONFIG, "invalid network config", describe(problems))
    return valid


def describe(problems: list[tuple[tuple, str]]) -> str:
    """Every problem validate() found, as one line naming where each is."""
    return "; ".join(f"{'.'.join(str(part) for part in location) or '<config>'}: {message}"
                     for location, message in problems)


def validate(node: tuple, value, location: tuple, problems: list):
    """`value` as `node` accepts it, in new dicts and lists; each problem found in it is
    appended to `problems` as (location, message), and the return value is then unusable."""
    kind = node[0]
    if kind == "typed-dict":
        if type(value) is not dict:
            problems.append((location, "Input should be a valid dictionary"))
            return None
        valid = {}
        for key, (required, field) in node[1].items():
            if key in value:
                valid[key] = validate(field, value[key], location + (key,), problems)
            elif required:
                problems.append((location + (key,), "Field required"))
        return valid
    if kind == "list":
        _, items, min_length = node
        if type(value) is not list:
            problems.append((location, "Input should be a valid list"))
            return None
        before = len(problems)
        valid = [validate(items, item, location + (index,), problems) for index, item in enumerate(value)]
        # pydantic checks the length of what validated, so only when every item did.
        if len(problems) == before and min_length is not None and len(valid) < min_length:
            problems.append((location, f"List should have at least {_count(min_length, 'item')} after validation, not {len(valid)}"))
        return valid
    if kind == "str":
        _, min_length, max_length = node
        if type(value) is not str:
            problems.append((location, "Input should be a valid string"))
        elif min_length is not None and len(value) < min_length:
            problems.append((location, f"String should have at least {_count(min_length, 'character')}"))
        elif max_length is not None and len(value) > max_length:
            problems.append((location, f"String should have at most {_count(max_length, 'character')}"))
        return value
    if kind == "int":
        _, ge, le = node
        if type(value) is not int:
            problems.append((location, "Input should be a valid integer"))
        elif value < ge:
            problems.append((location, f"Input should be greater than or equal to {ge}"))
        elif value > le:
            problems.append((location, f"Input should be less than or equal to {le}"))
        return value
    if kind == "bool":
        if type(value) is not bool:
            problems.append((location, "Input should be a valid boolean"))
        return value
    if kind == "literal":
        expected = node[1]
        if type(value) is not str or value not in expected:
            choices = [repr(choice) for choice in expected]
            text = choices[-1] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
            problems.append((location, f"Input should be {text}"))
        return value
    if kind == "dict":
        if type(value) is not dict:
            problems.append((location, "Input should be a valid dictionary"))
            return None
        return dict(value)
    raise ValueError(f"unknown schema node {kind!r}: regenerate cni_bridge/_schemas.py")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
