"""Ownership keys and element keys of cni_bridge.nft.table: pure, no root."""

import hashlib

from cni_bridge.nft import table


def test_key_plain_round_trip():
    key = table.attachment_key("mynet", "abc123", "eth0")
    assert key == "mynet/abc123/eth0"
    assert table.split_key("mynet", key) == ("abc123", "eth0")
    assert table.split_key("othernet", key) is None


def test_key_of_a_prefix_network_is_not_ours():
    # "net" must not claim the elements of "net2" or "ne".
    assert table.split_key("net", table.attachment_key("net2", "c", "eth0")) is None
    assert table.split_key("ne", table.attachment_key("net", "c", "eth0")) is None


def test_key_at_the_limit_stays_plain():
    cid = "c" * (table.COMMENT_MAX - len("net/") - len("/eth0"))
    key = table.attachment_key("net", cid, "eth0")
    assert len(key) == table.COMMENT_MAX
    assert table.split_key("net", key) == (cid, "eth0")


def test_long_key_is_hashed_stably():
    cid = "c" * 200
    key = table.attachment_key("net", cid, "eth0")
    assert key == table.attachment_key("net", cid, "eth0")
    assert key.startswith("net/#") and len(key) == len("net/#") + 32
    assert table.split_key("net", key) == ("", "")
    assert key != table.attachment_key("net", cid, "eth1")
    assert key != table.attachment_key("net2", cid, "eth0")
    # Pinned: GC of an upgraded plugin must recompute the keys an older one wrote.
    assert key == "net/#" + hashlib.sha256(f"net\0{cid}\0eth0".encode()).hexdigest()[:32]


def test_very_long_network_is_hashed_too():
    network = "n" * 120
    key = table.attachment_key(network, "abc", "eth0")
    assert key.startswith("#") and len(key.encode()) <= table.COMMENT_MAX
    assert table.split_key(network, key) == ("", "")
    assert table.split_key("n" * 119, key) is None


def test_multibyte_names_are_measured_in_bytes():
    assert len(table.attachment_key("ñ" * 60, "abc", "eth0").encode()) <= table.COMMENT_MAX


def test_stale_keys():
    long_id = "c" * 200
    comments = {"net/a/eth0", "net/b/eth0", table.attachment_key("net", long_id, "eth0"), "other/a/eth0", ""}
    valid = {("a", "eth0"), (long_id, "eth0")}
    assert table.stale_keys("net", comments, valid) == {"net/b/eth0"}
    assert table.stale_keys("net", comments, set()) == {"net/a/eth0", "net/b/eth0",
                                                        table.attachment_key("net", long_id, "eth0")}


def test_element_keys():
    assert table.ip_key("10.88.0.5") == bytes([10, 88, 0, 5])
    assert table.ip_key("fd00::5") == bytes.fromhex("fd000000000000000000000000000005")
    assert table.ifname_key("veth1") == b"veth1" + bytes(11)
    # Each field of a concatenation takes whole 4-byte registers: a MAC (6 bytes) takes 8.
    assert table.concat(bytes(range(6)), table.ifname_key("a")) == bytes(range(6)) + bytes(2) + b"a" + bytes(15)
    assert table.concat(b"\x06", b"\x1f\x90") == b"\x06\x00\x00\x00\x1f\x90\x00\x00"

