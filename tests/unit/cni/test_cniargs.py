"""CNI_ARGS parsing, as the reference's types.LoadArgs does it."""

import pytest

from cni_bridge.cni import errors
from cni_bridge.cni.cniargs import parse_cni_args
from cni_bridge.cni.errors import CNIError


@pytest.mark.parametrize(
    "raw, parsed",
    [
        ("", {}),
        ("IP=10.0.0.5", {"IP": "10.0.0.5"}),
        ("IP=10.0.0.5;MAC=0a:58:0a:00:00:05", {"IP": "10.0.0.5", "MAC": "0a:58:0a:00:00:05"}),
        ("IP=10.0.0.5,fd00::5", {"IP": "10.0.0.5,fd00::5"}),
        ("IP=", {"IP": ""}),
        ("IP=1.1.1.1;IP=2.2.2.2", {"IP": "2.2.2.2"}),
        ("IP=10.0.0.5;", {"IP": "10.0.0.5"}),
        # kubelet's keys, allowed by IgnoreUnknown and then dropped.
        (
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;IP=10.0.0.5",
            {"IgnoreUnknown": "1", "IP": "10.0.0.5"},
        ),
        ("K8S_POD_NAME=web;IgnoreUnknown=true", {"IgnoreUnknown": "true"}),
        ("IgnoreUnknown=0", {"IgnoreUnknown": "0"}),
    ],
)
def test_parse(raw, parsed):
    assert parse_cni_args(raw) == parsed


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "tRuE"])
def test_ignore_unknown_true_spellings(value):
    assert parse_cni_args(f"IgnoreUnknown={value};FOO=bar") == {"IgnoreUnknown": value}


@pytest.mark.parametrize(
    "raw, in_details",
    [
        ("FOO=bar", "FOO"),
        ("IP=10.0.0.5;K8S_POD_NAME=web", "K8S_POD_NAME"),
        ("IgnoreUnknown=0;FOO=bar", "FOO"),
        ("IgnoreUnknown=false;FOO=bar", "FOO"),
        ("ip=10.0.0.5", "ip"),  # keys are case-sensitive
        ("IP", "'IP'"),
        ("IP=10.0.0.5;MAC", "'MAC'"),
        ("IP=a=b", "'IP=a=b'"),
        ("IgnoreUnknown=1;FOO", "'FOO'"),  # a pair without '=' is malformed even when ignored
        ("IgnoreUnknown=yes;FOO=bar", "'yes'"),
        ("IgnoreUnknown=", "''"),
    ],
)
def test_refused(raw, in_details):
    with pytest.raises(CNIError) as caught:
        parse_cni_args(raw)
    assert caught.value.code == errors.INVALID_ENVIRONMENT
    assert caught.value.msg == "invalid CNI_ARGS"
    assert in_details in caught.value.details
