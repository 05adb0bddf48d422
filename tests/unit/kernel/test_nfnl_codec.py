"""Our nfnetlink codec (nf_tables) against pyroute2's message classes, the oracle: the
requests the plugins send are decoded by pyroute2 into what we meant, and replies recorded
from a real kernel are decoded by both and compared. No root needed.

pyroute2 does not set NLA_F_NESTED on nested attributes inside elements, where libnftnl
(and we) do, so requests are compared as pyroute2 decodes them rather than byte for byte.
"""

import pytest
from pyroute2.netlink.nfnetlink import nftsocket

import nft_replies
from oracle import ids_agree
from cni_bridge.kernel import nfnl
from cni_bridge.kernel.netlink import HEADER


def pyroute2_decode(cls, message: bytes):
    msg = cls(message)
    msg.decode()
    return msg


def plain(nla) -> object:
    """pyroute2's decoded attributes as plain lists of (name, value), flags dropped."""
    if isinstance(nla, dict) and "attrs" in nla:
        return [(name, plain(value)) for name, value, *_ in nla["attrs"]]
    if isinstance(nla, list):
        return [plain(v) for v in nla]
    return nla


def test_header_layout_agrees():
    assert [name for name, _ in nftsocket.nfgen_msg.fields] == ["nfgen_family", "version", "res_id"]
    message = nfnl.batch_begin(7)
    assert message[HEADER.size:HEADER.size + 4] == bytes([0, 0, 0, 10])  # res_id in network order


def test_batch_begin_and_end_as_libnftnl_writes_them():
    """NFNL_MSG_BATCH_BEGIN/END with res_id NFNL_SUBSYS_NFTABLES, and the generation the
    batch depends on as NFNL_BATCH_GENID (be32), as libnftnl's nftnl_batch_begin does."""
    assert nfnl.batch_begin(0x01020304) == (bytes.fromhex("1c000000" "1000" "0000" "00000000" "00000000")
                                            + bytes([0, 0, 0, 10]) + bytes.fromhex("0800" "0100" "01020304"))
    assert nfnl.batch_begin() == bytes.fromhex("14000000" "1000" "0000" "00000000" "00000000") + bytes([0, 0, 0, 10])
    assert nfnl.batch_end() == bytes.fromhex("14000000" "1100" "0000" "00000000" "00000000") + bytes([0, 0, 0, 10])


def test_add_element_as_pyroute2_reads_it():
    element = nfnl.element_attrs(bytes([10, 88, 0, 5]), data=("jump", "masq-10.88.0.0_16"), comment="net/c1/eth0")
    message = nfnl.set_elements_message(nfnl.NFT_MSG_NEWSETELEM, 0x605, nfnl.NFPROTO_INET, "cni_bridge", "masq4",
                                        [element])
    msg = pyroute2_decode(nftsocket.nft_set_elem_list_msg, message)
    assert (msg["header"]["type"], msg["header"]["flags"], msg["nfgen_family"]) == (10 << 8 | 12, 0x605, 1)
    assert msg.get_attr("NFTA_SET_ELEM_LIST_TABLE") == "cni_bridge"
    assert msg.get_attr("NFTA_SET_ELEM_LIST_SET") == "masq4"
    (elem,) = msg.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS")
    assert plain(elem) == [
        ("NFTA_SET_ELEM_KEY", [("NFTA_DATA_VALUE", bytes([10, 88, 0, 5]))]),
        ("NFTA_SET_ELEM_DATA", [("NFTA_DATA_VERDICT", [("NFTA_VERDICT_CODE", "NFT_JUMP"),
                                                       ("NFTA_VERDICT_CHAIN", "masq-10.88.0.0_16")])]),
        ("NFTA_SET_ELEM_USERDATA", [("NFTNL_UDATA_SET_ELEM_COMMENT", b"net/c1/eth0")]),
    ]


def test_interval_element_with_value_data_as_pyroute2_reads_it():
    element = nfnl.element_attrs(b"\x0a\x58\x00\x00", key_end=b"\x0a\x58\xff\xff", data=b"\x01\x02\x03\x04",
                                 comment="x")
    message = nfnl.set_elements_message(nfnl.NFT_MSG_DELSETELEM, 0x4, nfnl.NFPROTO_IPV4, "t", "s", [element, element])
    msg = pyroute2_decode(nftsocket.nft_set_elem_list_msg, message)
    elements = msg.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS")
    assert len(elements) == 2
    assert plain(elements[0])[:3] == [
        ("NFTA_SET_ELEM_KEY", [("NFTA_DATA_VALUE", b"\x0a\x58\x00\x00")]),
        ("NFTA_SET_ELEM_KEY_END", [("NFTA_DATA_VALUE", b"\x0a\x58\xff\xff")]),
        ("NFTA_SET_ELEM_DATA", [("NFTA_DATA_VALUE", b"\x01\x02\x03\x04")]),
    ]


@pytest.mark.parametrize("message, cls, attrs", [
    (nfnl.list_rules_request(nfnl.NFPROTO_INET, "cni_bridge"), nftsocket.nft_rule_msg, [("NFTA_RULE_TABLE", "cni_bridge")]),
    (nfnl.list_chains_request(nfnl.NFPROTO_BRIDGE, "cni_bridge"), nftsocket.nft_chain_msg,
     [("NFTA_CHAIN_TABLE", "cni_bridge")]),
    (nfnl.delete_chain_request(nfnl.NFPROTO_INET, "cni_bridge", "masq-x"), nftsocket.nft_chain_msg,
     [("NFTA_CHAIN_TABLE", "cni_bridge"), ("NFTA_CHAIN_NAME", "masq-x")]),
    (nfnl.get_chain_request(nfnl.NFPROTO_INET, "cni_bridge", "pod-masq"), nftsocket.nft_chain_msg,
     [("NFTA_CHAIN_TABLE", "cni_bridge"), ("NFTA_CHAIN_NAME", "pod-masq")]),
    (nfnl.get_gen_request(), nftsocket.nft_gen_msg, []),
    (nfnl.list_sets_request(nfnl.NFPROTO_INET, "cni_bridge"), nftsocket.nft_set_msg, [("NFTA_SET_TABLE", "cni_bridge")]),
])
def test_requests_as_pyroute2_reads_them(message, cls, attrs):
    assert plain(pyroute2_decode(cls, message)) == attrs


def test_recorded_generation():
    ours = nfnl.GEN_MSG.decode(bytes.fromhex(nft_replies.GENERATION))[1]
    theirs = pyroute2_decode(nftsocket.nft_gen_msg, bytes.fromhex(nft_replies.GENERATION))
    assert ours["NFTA_GEN_ID"] == theirs.get_attr("NFTA_GEN_ID") > 0


def test_recorded_chains():
    found = {}
    for hexed in nft_replies.CHAINS:
        data = bytes.fromhex(hexed)
        ours = nfnl.CHAIN_MSG.decode(data)[1]
        theirs = pyroute2_decode(nftsocket.nft_chain_msg, data)
        assert ours["NFTA_CHAIN_NAME"] == theirs.get_attr("NFTA_CHAIN_NAME")
        assert ours["NFTA_CHAIN_USE"] == theirs.get_attr("NFTA_CHAIN_USE")
        hook = theirs.get_attr("NFTA_CHAIN_HOOK")
        if hook is not None:
            assert ours["NFTA_CHAIN_HOOK"]["NFTA_HOOK_HOOKNUM"] == hook.get_attr("NFTA_HOOK_HOOKNUM")
        found[ours["NFTA_CHAIN_NAME"]] = ours
    assert found["postrouting"]["NFTA_CHAIN_HOOK"] == {"NFTA_HOOK_HOOKNUM": 4, "NFTA_HOOK_PRIORITY": 100}
    assert found["postrouting"]["NFTA_CHAIN_TYPE"] == "nat"
    assert found["masq-10.9.0.0_24"]["NFTA_CHAIN_USE"] == 3  # its rule and two elements jumping to it
    assert "NFTA_CHAIN_HOOK" not in found["masq-10.9.0.0_24"]


def test_recorded_rules_carry_their_comments():
    comments = {}
    for hexed in nft_replies.RULES:
        data = bytes.fromhex(hexed)
        ours = nfnl.RULE_MSG.decode(data)[1]
        theirs = pyroute2_decode(nftsocket.nft_rule_msg, data)
        assert ours["NFTA_RULE_CHAIN"] == theirs.get_attr("NFTA_RULE_CHAIN")
        assert ours["NFTA_RULE_HANDLE"] == theirs.get_attr("NFTA_RULE_HANDLE")
        comments[ours["NFTA_RULE_CHAIN"]] = nfnl.udata_find_comment(ours["NFTA_RULE_USERDATA"])
    assert comments == {"postrouting": "cni_bridge masq v1 ipv4", "masq-10.9.0.0_24": "cni_bridge masq v1 10.9.0.0/24"}


def test_recorded_elements():
    found = []
    for hexed in nft_replies.ELEMENTS:
        data = bytes.fromhex(hexed)
        ours = nfnl.SET_ELEM_MSG.decode(data)[1]
        theirs = pyroute2_decode(nftsocket.nft_set_elem_list_msg, data)
        ours_elements = (ours.get("NFTA_SET_ELEM_LIST_ELEMENTS") or {}).get("NFTA_LIST_ELEM", [])
        theirs_elements = theirs.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS") or []
        assert len(ours_elements) == len(theirs_elements)
        for mine, other in zip(ours_elements, theirs_elements):
            assert mine["NFTA_SET_ELEM_KEY"]["NFTA_DATA_VALUE"] == other.get_attr("NFTA_SET_ELEM_KEY").get_attr(
                "NFTA_DATA_VALUE")
            verdict = other.get_attr("NFTA_SET_ELEM_DATA").get_attr("NFTA_DATA_VERDICT")
            assert mine["NFTA_SET_ELEM_DATA"]["NFTA_DATA_VERDICT"]["NFTA_VERDICT_CHAIN"] == verdict.get_attr(
                "NFTA_VERDICT_CHAIN")
            comment = nfnl.udata_find_comment(mine.get("NFTA_SET_ELEM_USERDATA"))
            theirs_udata = dict(other.get_attr("NFTA_SET_ELEM_USERDATA") or [])
            assert comment.encode() == theirs_udata.get("NFTNL_UDATA_SET_ELEM_COMMENT", b"")
            found.append((mine["NFTA_SET_ELEM_KEY"]["NFTA_DATA_VALUE"], comment))
    assert sorted(found) == [(bytes([10, 9, 0, 5]), "net/c1/eth0"), (bytes([10, 9, 0, 6]), "")]


def test_udata_comment_round_trip():
    assert nfnl.udata_find_comment(nfnl.udata_comment("net/c/eth0")) == "net/c/eth0"
    assert nfnl.udata_find_comment(bytes([1, 4, 0, 0, 0, 1]) + nfnl.udata_comment("x")) == "x"  # another TLV first
    assert nfnl.udata_find_comment(None) == "" and nfnl.udata_find_comment(b"\x00") == ""


@pytest.mark.parametrize("ours, theirs", [
    (nfnl.SET_ELEM, nftsocket.nft_set_elem_list_msg.set_elem),
    (nfnl.SET_ELEM_LIST, nftsocket.nft_set_elem_list_msg),
    (nfnl.CHAIN, nftsocket.nft_chain_msg),
    (nfnl.RULE, nftsocket.nft_rule_msg),
    (nfnl.SET, nftsocket.nft_set_msg),
    (nfnl.GEN, nftsocket.nft_gen_msg),
    (nfnl.DATA, nftsocket.nft_set_elem_list_msg.set_elem.data_attributes),
], ids=lambda table: getattr(table, "__name__", "ours"))
def test_attribute_ids_agree(ours, theirs):
    assert ids_agree(ours, theirs)
