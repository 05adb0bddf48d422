"""The names a runtime hands us: network names, container ids, interface names."""

import pytest

from cni_bridge.cni import errors, names
from cni_bridge.cni.errors import CNIError

VALID = ["a", "net1", "my-net_2.0", "0", "A.b-c_d", "x" * 200]
INVALID = ["", ".", "..", "../etc", "a/b", "/abs", ".hidden", "-x", "_x", "a b", "a\nb", "a\x00b", "réseau", "a:b", "a;b"]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name):
    assert names.is_valid_name(name)
    assert names.check_network_name(name) == name
    assert names.check_container_id(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name):
    assert not names.is_valid_name(name)
    with pytest.raises(CNIError) as caught:
        names.check_container_id(name)
    assert caught.value.code == errors.INVALID_ENVIRONMENT and "CNI_CONTAINERID" in caught.value.msg
    with pytest.raises(CNIError) as caught:
        names.check_network_name(name)
    assert caught.value.code == errors.INVALID_CONFIG


@pytest.mark.parametrize("name", [None, 3, ["net"]])
def test_network_name_of_the_wrong_type(name):
    with pytest.raises(CNIError) as caught:
        names.check_network_name(name)
    assert caught.value.code == errors.INVALID_CONFIG and caught.value.msg == "missing network name"


@pytest.mark.parametrize("ifname", ["eth0", "e", "a" * 15, "net1.100", "veth-é"])
def test_valid_interface_names(ifname):
    assert names.check_interface_name(ifname) == ifname


@pytest.mark.parametrize(
    "ifname, problem",
    [
        ("", "is empty"),
        ("a" * 16, "longer than 15"),
        ("é" * 8, "longer than 15"),  # 8 characters, 16 bytes: the kernel counts bytes
        (".", "'.' or '..'"),
        ("..", "'.' or '..'"),
        ("a/b", "'/'"),
        ("eth0:1", "':'"),
        ("eth 0", "white space"),
        ("eth\t0", "white space"),
        ("eth0\n", "white space"),
    ],
)
def test_invalid_interface_names(ifname, problem):
    with pytest.raises(CNIError) as caught:
        names.check_interface_name(ifname)
    assert caught.value.code == errors.INVALID_ENVIRONMENT
    assert caught.value.msg == "invalid CNI_IFNAME" and problem in caught.value.details
