"""Our nfnetlink codec (nf_tables, conntrack) against pyroute2's message classes, the oracle: the
requests the plugins send are decoded by pyroute2 into what we meant, and replies recorded
from a real kernel are decoded by both and compared. No root needed.

pyroute2 does not set NLA_F_NESTED on nested attributes inside elements, where libnftnl
(and we) do, so requests are compared as pyroute2 decodes them rather than byte for byte.
"""

import pytest
from pyroute2.netlink.nfnetlink import nfctsocket, nftsocket

import conntrack_replies
import nft_replies
from oracle import ids_agree, pyroute2_ids
from cni_bridge.kernel import nfnl
from cni_bridge.kernel.netlink import HEADER, NLM_F_DUMP, NLM_F_REQUEST


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


# ---- conntrack ---------------------------------------------------------------------------


def test_conntrack_dump_request_as_pyroute2_builds_it():
    """The filtered dump is the one pyroute2's NFCTSocket.dump(tuple_orig=...) sends."""
    filtered = nfctsocket.NFCTAttrTuple(proto=17, dport=5353)
    filtered.attrs()  # computes .flags, as NFCTSocket.dump does
    theirs = nfctsocket.nfct_msg.create_from(tuple_orig=filtered,
                                             cta_filter={"attrs": [["CTA_FILTER_ORIG_FLAGS", filtered.flags]]})
    theirs["nfgen_family"] = nfnl.NFPROTO_IPV4
    theirs["header"]["type"] = nfnl.ct_type(nfnl.IPCTNL_MSG_CT_GET)
    theirs["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    theirs.encode()
    ours = nfnl.conntrack_dump_request(nfnl.NFPROTO_IPV4, 17, 5353)
    mine, other = pyroute2_decode(nfctsocket.nfct_msg, ours), pyroute2_decode(nfctsocket.nfct_msg, bytes(theirs.data))
    assert plain(mine) == plain(other) == [
        ("CTA_TUPLE_ORIG", [("CTA_TUPLE_PROTO", [("CTA_PROTO_NUM", 17), ("CTA_PROTO_DST_PORT", 5353)])]),
        ("CTA_FILTER", [("CTA_FILTER_ORIG_FLAGS", nfctsocket.FILTER_FLAG_CTA_PROTO_NUM
                         | nfctsocket.FILTER_FLAG_CTA_PROTO_DST_PORT)]),
    ]
    assert (mine["header"]["type"], mine["nfgen_family"]) == (1 << 8 | 1, nfnl.NFPROTO_IPV4)
    assert mine["header"]["flags"] & NLM_F_DUMP == NLM_F_DUMP


@pytest.mark.parametrize("family, src, dst", [(nfnl.NFPROTO_IPV4, "10.0.0.1", "10.0.0.2"),
                                              (nfnl.NFPROTO_IPV6, "fd00::1", "fd00::2")])
def test_conntrack_delete_request_as_pyroute2_builds_it(family, src, dst):
    """A delete names the entry's whole original tuple, like pyroute2's entry("del", ...)."""
    orig = {"CTA_TUPLE_IP": {("CTA_IP_V4_SRC" if family == 2 else "CTA_IP_V6_SRC"): src,
                             ("CTA_IP_V4_DST" if family == 2 else "CTA_IP_V6_DST"): dst},
            "CTA_TUPLE_PROTO": {"CTA_PROTO_NUM": 17, "CTA_PROTO_SRC_PORT": 1111, "CTA_PROTO_DST_PORT": 5353}}
    ours = pyroute2_decode(nfctsocket.nfct_msg, nfnl.conntrack_delete_request(family, orig, entry_id=77))
    tuple_orig = nfctsocket.NFCTAttrTuple(family=10 if family == nfnl.NFPROTO_IPV6 else 2, saddr=src, daddr=dst,
                                          proto=17, sport=1111, dport=5353)
    theirs = nfctsocket.nfct_msg.create_from(tuple_orig=tuple_orig, id=77)
    theirs.encode()
    assert plain(ours) == plain(pyroute2_decode(nfctsocket.nfct_msg, bytes(theirs.data)))
    assert ours["header"]["type"] == 1 << 8 | 2 and ours["nfgen_family"] == family


def test_conntrack_delete_refuses_an_incomplete_tuple():
    """A delete without a tuple would flush every entry: it is never built."""
    complete = {"CTA_TUPLE_IP": {"CTA_IP_V4_SRC": "10.0.0.1", "CTA_IP_V4_DST": "10.0.0.2"},
                "CTA_TUPLE_PROTO": {"CTA_PROTO_NUM": 17, "CTA_PROTO_SRC_PORT": 1, "CTA_PROTO_DST_PORT": 2}}
    for broken in ({}, {**complete, "CTA_TUPLE_IP": {"CTA_IP_V4_SRC": "10.0.0.1"}},
                   {**complete, "CTA_TUPLE_PROTO": {"CTA_PROTO_NUM": 17, "CTA_PROTO_DST_PORT": 2}}):
        with pytest.raises(ValueError, match="whole tuple"):
            nfnl.conntrack_delete_request(nfnl.NFPROTO_IPV4, broken)
    with pytest.raises(ValueError):  # the IPv4 tuple for an IPv6 entry
        nfnl.conntrack_delete_request(nfnl.NFPROTO_IPV6, complete)
    nfnl.conntrack_delete_request(nfnl.NFPROTO_IPV4, complete)


@pytest.mark.parametrize("recorded, family, expected", [
    (conntrack_replies.DUMP_IPV4, 2, [("10.0.0.1", "10.0.0.2", 1111, 0), ("10.0.0.3", "10.0.0.2", 1112, 7)]),
    (conntrack_replies.DUMP_IPV6, 10, [("fd00::1", "fd00::2", 1111, 0)]),
])
def test_recorded_conntrack_entries(recorded, family, expected):
    found = []
    for hexed in recorded:
        data = bytes.fromhex(hexed)
        header, ours = nfnl.CT_MSG.decode(data)
        theirs = pyroute2_decode(nfctsocket.nfct_msg, data)
        mine = nfctsocket.NFCTAttrTuple.from_netlink(family, theirs.get_attr("CTA_TUPLE_ORIG"))
        ip, proto = ours["CTA_TUPLE_ORIG"]["CTA_TUPLE_IP"], ours["CTA_TUPLE_ORIG"]["CTA_TUPLE_PROTO"]
        v = "V4" if family == 2 else "V6"
        assert (ip[f"CTA_IP_{v}_SRC"], ip[f"CTA_IP_{v}_DST"]) == (mine.saddr, mine.daddr)
        assert (proto["CTA_PROTO_NUM"], proto["CTA_PROTO_SRC_PORT"], proto["CTA_PROTO_DST_PORT"]) == (
            mine.proto, mine.sport, mine.dport)
        assert ours["CTA_ID"] == theirs.get_attr("CTA_ID") and ours.get("CTA_ZONE") == theirs.get_attr("CTA_ZONE")
        assert ours["CTA_STATUS"] == theirs.get_attr("CTA_STATUS") and header["family"] == family
        # What a delete of this entry carries: its own tuple and id.
        request = pyroute2_decode(nfctsocket.nfct_msg, nfnl.conntrack_delete_request(
            family, ours["CTA_TUPLE_ORIG"], ours["CTA_ID"], ours.get("CTA_ZONE")))
        wanted = nfctsocket.NFCTAttrTuple.from_netlink(family, request.get_attr("CTA_TUPLE_ORIG"))
        assert (wanted.saddr, wanted.daddr, wanted.sport, wanted.dport) == (mine.saddr, mine.daddr, mine.sport, mine.dport)
        assert request.get_attr("CTA_ID") == ours["CTA_ID"] and request.get_attr("CTA_ZONE") == ours.get("CTA_ZONE")
        found.append((mine.saddr, mine.daddr, mine.sport, ours.get("CTA_ZONE", 0)))
    assert sorted(found) == expected


@pytest.mark.parametrize("ours, theirs", [
    (nfnl.CT, nfctsocket.nfct_msg),
    (nfnl.CT_TUPLE, nfctsocket.nfct_msg.cta_tuple),
    (nfnl.CT_IP, nfctsocket.nfct_msg.cta_tuple.cta_ip),
    (nfnl.CT_PROTO, nfctsocket.nfct_msg.cta_tuple.cta_proto),
    (nfnl.CT_FILTER, nfctsocket.nfct_msg.cta_filter),
], ids=["ct", "tuple", "ip", "proto", "filter"])
def test_conntrack_attribute_ids_agree(ours, theirs):
    # pyroute2 lacks CTA_TUPLE_ZONE: 3 in linux/netfilter/nfnetlink_conntrack.h
    known = {**pyroute2_ids(theirs), "CTA_TUPLE_ZONE": 3}
    assert {name: entry[1] for name, entry in ours.by_name.items()} == {name: known[name] for name in ours.by_name}
