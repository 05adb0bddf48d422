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


# ---- what every value of the environment must be: UTF-8 text, no control characters, bounded


@pytest.mark.parametrize("ifname, problem", [
    ("eth\udcff", "not valid UTF-8 (byte 0xff at character 3)"),  # os.environ's view of the byte 0xff
    ("\udcc3\udca9", "not valid UTF-8"),
    ("eth\x01", "control character (U+0001"),
    ("eth\x7f", "control character (U+007F"),
    ("eth\x9b", "control character (U+009B"),  # a C1 control: CSI, which terminals act on
])
def test_interface_names_that_are_not_clean_text(ifname, problem):
    with pytest.raises(CNIError) as caught:
        names.check_interface_name(ifname)
    assert caught.value.code == errors.INVALID_ENVIRONMENT and caught.value.msg == "invalid CNI_IFNAME"
    assert problem in caught.value.details


def test_container_id_length():
    assert names.check_container_id("a" * names.MAX_CONTAINER_ID_LENGTH)
    with pytest.raises(CNIError) as caught:
        names.check_container_id("a" * (names.MAX_CONTAINER_ID_LENGTH + 1))
    assert caught.value.code == errors.INVALID_ENVIRONMENT and "CNI_CONTAINERID" in caught.value.msg
    assert "longer than 255 bytes (256)" in caught.value.details
    assert len(caught.value.details) < 200, "the error quotes a long value cut short"


@pytest.mark.parametrize("value", ["", "/var/run/netns/c1", "/proc/1/ns/net", "/run/netns/é 😀", "/" + "d" * 4094])
def test_clean_text(value):
    assert names.text_problem(value, names.MAX_PATH_LENGTH) is None
    assert names.check_environment_text("CNI_NETNS", value, names.MAX_PATH_LENGTH) == value


@pytest.mark.parametrize("value, problem", [
    ("/run/netns/\udc80", "not valid UTF-8 (byte 0x80 at character 11)"),
    ("/run/netns/\ud800", "not valid UTF-8 (U+D800 at character 11)"),
    ("/run/netns/a\nb", "control character (U+000A at character 12)"),
    ("/run/netns/\x1b[2J", "control character (U+001B"),
    ("/" + "d" * 4095, "longer than 4095 bytes (4096)"),
    ("/" + "é" * 2048, "longer than 4095 bytes (4097)"),  # bytes, not characters
])
def test_text_that_cannot_be_taken(value, problem):
    assert problem in names.text_problem(value, names.MAX_PATH_LENGTH)
    with pytest.raises(CNIError) as caught:
        names.check_environment_text("CNI_NETNS", value, names.MAX_PATH_LENGTH)
    assert caught.value.code == errors.INVALID_ENVIRONMENT and caught.value.msg == "invalid CNI_NETNS"
    assert problem in caught.value.details


def test_cni_path_is_split_and_each_entry_bounded():
    assert names.check_cni_path("") == []
    assert names.check_cni_path("/opt/cni/bin::/usr/lib/cni:") == ["/opt/cni/bin", "/usr/lib/cni"]
    longest = "/" + "p" * 4094
    assert names.check_cni_path(f"{longest}:{longest}") == [longest, longest], "the bound is per entry"
    for bad in (f"/a:/{'p' * 4095}", "/a:/b\udcff", "/a\t:/b"):
        with pytest.raises(CNIError) as caught:
            names.check_cni_path(bad)
        assert caught.value.code == errors.INVALID_ENVIRONMENT and caught.value.msg == "invalid CNI_PATH"


def test_shown_values_are_ascii_and_short():
    assert names.shown("eth\udcff") == "'eth\\udcff'"
    long = names.shown("x" * 100_000)
    assert long.startswith("'xxx") and long.endswith("... (100000 characters)") and len(long) < 100
