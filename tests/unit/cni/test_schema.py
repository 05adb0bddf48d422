"""cni_bridge.cni.schema against pydantic, the oracle.

Thousands of configs, valid and invalid, are made from each model's pydantic-core schema
(with a fixed seed) and validated twice: by pydantic (a TypeAdapter over the model) and by
the generated table in cni_bridge/_schemas.py. Both must accept the same configs and
return the same data, with the same types and key order, and must report the same problems
in the same order, at the same locations, with the same messages. A test model uses the
supported features with parameters the real models do not (yet) use.
"""

import copy
import random
from typing import Annotated, Literal

import pytest
from pydantic import Field, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from cni_bridge import _schemas
from cni_bridge.cni import errors, schema
from cni_bridge.cni.errors import CNIError
from cni_bridge.models import LOOSE, MODELS
from cni_bridge.schemagen import render


@with_config(LOOSE)
class Part(TypedDict):
    level: Annotated[int, Field(ge=-3, le=3)]
    label: NotRequired[Annotated[str, Field(min_length=2)]]


@with_config(LOOSE)
class Features(TypedDict):
    pair: NotRequired[Annotated[list[Part], Field(min_length=2)]]
    spare: NotRequired[Part]
    only: NotRequired[Literal["only"]]
    three: Literal["a", "b", "c"]
    short: NotRequired[Annotated[str, Field(max_length=1)]]
    flags: NotRequired[list[bool]]
    extra: NotRequired[dict]


def _render_test_model() -> tuple:
    namespace: dict = {}
    exec(render({"FEATURES": Features}), namespace)
    return namespace["FEATURES"]


UNDER_TEST = {constant: (model, getattr(_schemas, constant)) for constant, model in MODELS.items()}
UNDER_TEST["FEATURES"] = (Features, _render_test_model())

SEED = 7
CASES_PER_MODEL = 2500
TEXT = ["", "a", "eth0", "10.0.0.0/24", "é", "😀", "a b", "x" * 15, "y" * 16, "ünïcödé" * 3, "\\", '"', "\x7f", "0"]
# JSON values of every type, for keys no model knows and for replacing valid values.
ANY = [None, True, False, 0, 1, -1, 68, 4094, 4095, 65535, 2**32, 2**64, -(2**63), 1.0, 0.5, -0.0, 1e300,
       "", "1", "true", "x" * 16, [], [1], ["a"], [[]], [{}], {}, {"a": 1}, {"subnet": "10.0.0.0/24"}]


def oracle(adapter: TypeAdapter, conf):
    """(data, problems) from pydantic; data is None when there are problems."""
    try:
        return adapter.validate_python(conf), []
    except ValidationError as err:
        return None, [(tuple(e["loc"]), e["msg"]) for e in err.errors(include_url=False)]


def ours(table: tuple, conf):
    problems: list = []
    valid = schema.validate(table, conf, (), problems)
    return (None if problems else valid), problems


class ConfigMaker:
    """Valid configs from a pydantic-core schema, and mutations that may break them."""

    def __init__(self, core: dict, rng: random.Random):
        self.rng = rng
        self.definitions = {d["ref"]: d for d in core.get("definitions", [])}
        self.root = core["schema"] if core["type"] == "definitions" else core

    def resolve(self, core: dict) -> dict:
        return self.definitions[core["schema_ref"]] if core["type"] == "definition-ref" else core

    def valid(self, core: dict):
        core = self.resolve(core)
        rng, kind = self.rng, core["type"]
        if kind == "typed-dict":
            value = {}
            keys = list(core["fields"])
            rng.shuffle(keys)  # the output follows the model's order, whatever the input's
            for key in keys:
                field = core["fields"][key]
                if field["required"] or rng.random() < 0.5:
                    value[key] = self.valid(field["schema"])
                if rng.random() < 0.1:
                    value[f"x-{key}"] = copy.deepcopy(rng.choice(ANY))  # unknown keys are dropped
            return value
        if kind == "list":
            low = core.get("min_length") or 0
            return [self.valid(core["items_schema"]) for _ in range(rng.randint(low, low + 2))]
        if kind == "str":
            low, high = core.get("min_length") or 0, core.get("max_length") or 20
            return rng.choice([t for t in TEXT if low <= len(t) <= high] or ["a" * low])
        if kind == "int":
            return rng.choice([core["ge"], core["le"], rng.randint(core["ge"], core["le"])])
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "literal":
            return rng.choice(core["expected"])
        if kind == "dict":
            return {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}], "nested": copy.deepcopy(rng.choice(ANY))}
        raise AssertionError(f"the corpus does not know {kind!r}")

    def wrong(self, core: dict):
        """A value that is likely, not certain, to be wrong for `core`."""
        core = self.resolve(core)
        kind, rng = core["type"], self.rng
        near = {
            "int": lambda: [core["ge"] - 1, core["le"] + 1, float(core["ge"]), True, str(core["le"])],
            "str": lambda: ["a" * ((core.get("max_length") or 40) + 1), "a" * max((core.get("min_length") or 0) - 1, 0), 15],
            "list": lambda: [[], [self.wrong(core["items_schema"])], [self.valid(core["items_schema"]), None], ()],
            "typed-dict": lambda: [{}, [self.valid(core)], {k: None for k in core["fields"]}],
            "literal": lambda: [core["expected"][0].upper(), [core["expected"][0]], 1],
        }.get(kind, lambda: [])()
        return copy.deepcopy(rng.choice(near + ANY))

    def sites(self, core: dict, value, path=()):
        """Every (path, schema) in a config that may already be broken, some absent keys too."""
        core = self.resolve(core)
        yield path, core
        if core["type"] == "typed-dict" and type(value) is dict:
            for key, field in core["fields"].items():
                if key in value:
                    yield from self.sites(field["schema"], value[key], path + (key,))
                elif self.rng.random() < 0.2:
                    yield path + (key,), self.resolve(field["schema"])
        elif core["type"] == "list" and type(value) is list:
            for index, item in enumerate(value):
                yield from self.sites(core["items_schema"], item, path + (index,))

    def invalid(self):
        conf = self.valid(self.root)
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            path, core = self.rng.choice(list(self.sites(self.root, conf)))
            if not path:
                return self.wrong(core) if self.rng.random() < 0.2 else conf
            parent = conf
            for part in path[:-1]:
                parent = parent[part]
            if type(parent) is dict and path[-1] in parent and self.rng.random() < 0.2:
                del parent[path[-1]]  # a missing required key, or an optional one: still valid
            elif type(parent) in (dict, list):
                parent[path[-1]] = self.wrong(core)
        return conf


def corpus(constant: str):
    """Hand-written configs for the model, then generated ones."""
    adapter = TypeAdapter(UNDER_TEST[constant][0])
    maker = ConfigMaker(adapter.core_schema, random.Random(f"{SEED}-{constant}"))
    yield from HAND_WRITTEN.get(constant, [])
    for index in range(CASES_PER_MODEL):
        yield maker.valid(maker.root) if index % 3 == 0 else maker.invalid()


HOST_LOCAL = {"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "host-local"}}
BRIDGE = {"name": "n", "type": "bridge"}
ROUTE = {"dst": "10.1.0.0/16"}
HAND_WRITTEN = {
    "HOST_LOCAL_CONF": [
        None, [], "conf", 1, {}, {"ipam": None},
        {**HOST_LOCAL, "ipam": {"type": "host-local", "ranges": []}},
        {**HOST_LOCAL, "ipam": {"type": "host-local", "ranges": [[]]}},
        {**HOST_LOCAL, "ipam": {"type": "host-local", "ranges": [[], [{}], [{"subnet": 1}, []]]}},
        {**HOST_LOCAL, "ipam": {"type": "host-local", "ranges": [{"subnet": "10.0.0.0/24"}]}},
        {**HOST_LOCAL, "ipam": {"type": "host-local", "routes": [{**ROUTE, "mtu": value} for value in
                                                                  (True, False, 1.0, -1, 65520, 65521, 2**64, "1400", None)]}},
        {**HOST_LOCAL, "ipam": {"type": "host-local", "routes": [{**ROUTE, "scope": 254, "table": 2**32 - 1, "priority": 2**32,
                                                                  "advmss": 65496}]}},
        {**HOST_LOCAL, "runtimeConfig": {"ipRanges": [[{"rangeStart": "10.0.0.5"}]], "ips": "10.0.0.5"}},
        {**HOST_LOCAL, "args": {"cni": {"ips": ["10.0.0.5", 5], "mac": None}}, "prevResult": []},
        {**HOST_LOCAL, "prevResult": {"ips": [{"address": "10.0.0.2/24"}]}, "cni.dev/attachments": [{}]},
        {**HOST_LOCAL, "cni.dev/valid-attachments": [{"containerID": "c", "ifname": "eth0", "x": 1}, "c"]},
    ],
    "BRIDGE_CONF": [
        None, [], {}, {"name": 1, "type": None},
        {**BRIDGE, "bridge": "é" * 15}, {**BRIDGE, "bridge": "😀" * 16}, {**BRIDGE, "bridge": ""},
        {**BRIDGE, "mtu": 67, "vlan": 4095, "isGateway": 1, "ipMasq": "true", "hairpinMode": None},
        {**BRIDGE, "mtu": 65535, "vlan": 0, "isGateway": False, "ipMasqBackend": "nftables"},
        {**BRIDGE, "ipMasqBackend": "NFTABLES"}, {**BRIDGE, "ipMasqBackend": ["iptables"]},
        {**BRIDGE, "vlanTrunk": [{"id": 0}, {"minID": 1, "maxID": 4095}, {}, None]},
        {**BRIDGE, "dns": {"nameservers": "10.0.0.53", "search": [1], "options": []}},
        {**BRIDGE, "ipam": {}}, {**BRIDGE, "ipam": {"type": "host-local", "ranges": 5}},
    ],
    "FEATURES": [
        {"three": "a", "pair": [{"level": 9}]}, {"three": "a", "pair": [{"level": 1}]},
        {"three": "d", "only": "ONLY", "short": "ab", "pair": [{"level": -4, "label": "x"}, {"level": 0}, "p"]},
    ],
}


def _field_paths(table: tuple, path=()):
    """Every field of a schema table, list items as "*"."""
    kind = table[0]
    if kind == "typed-dict":
        for key, (_, field) in table[1].items():
            yield path + (key,)
            yield from _field_paths(field, path + (key,))
    elif kind == "list":
        yield from _field_paths(table[1], path + ("*",))


@pytest.mark.parametrize("constant", list(UNDER_TEST))
def test_generated_schema_agrees_with_pydantic(constant):
    model, table = UNDER_TEST[constant]
    adapter = TypeAdapter(model)
    disagreements, accepted, rejected, failing_fields = [], 0, 0, set()
    for conf in corpus(constant):
        pristine = copy.deepcopy(conf)
        expected, got = oracle(adapter, conf), ours(table, conf)
        if repr(expected) != repr(got):
            disagreements.append((pristine, expected, got))
        assert repr(conf) == repr(pristine), "validation changed its input"
        accepted += not expected[1]
        rejected += bool(expected[1])
        failing_fields |= {tuple("*" if type(part) is int else part for part in loc) for loc, _ in expected[1]}
    assert not disagreements, f"{len(disagreements)} disagreements, the first: {disagreements[:3]}"
    # The corpus is worth something: both outcomes are common, and every field of the
    # model was wrong in some config.
    assert accepted > CASES_PER_MODEL / 5 and rejected > CASES_PER_MODEL / 3, (accepted, rejected)
    assert set(_field_paths(table)) <= failing_fields, set(_field_paths(table)) - failing_fields


def test_validate_conf_reports_like_pydantic():
    """The details of error 7 are pydantic's problems, "location: message; ...", in its order."""
    adapter, checked = TypeAdapter(MODELS["BRIDGE_CONF"]), 0
    for conf in corpus("BRIDGE_CONF"):
        _, problems = oracle(adapter, conf)
        if not problems:
            continue
        with pytest.raises(CNIError) as caught:
            schema.validate_conf(_schemas.BRIDGE_CONF, conf)
        assert caught.value.code == errors.INVALID_CONFIG and caught.value.msg == "invalid network config"
        assert caught.value.details == "; ".join(f"{'.'.join(map(str, loc)) or '<config>'}: {msg}" for loc, msg in problems)
        checked += 1
    assert checked > 500


def test_validation_returns_new_containers():
    conf = {**BRIDGE, "dns": {"nameservers": ["10.0.0.53"]}, "prevResult": {"ips": []}, "vlanTrunk": [{"id": 5}]}
    valid = schema.validate_conf(_schemas.BRIDGE_CONF, conf)
    assert valid == conf
    for key in ("dns", "prevResult", "vlanTrunk"):
        assert valid[key] is not conf[key]
    assert valid["dns"]["nameservers"] is not conf["dns"]["nameservers"]
