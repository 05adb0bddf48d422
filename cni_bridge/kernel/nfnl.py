"""nfnetlink message tables: nf_tables (generations, chains, rules, set elements) and
conntrack (a dump filtered by the kernel, a delete by tuple), for kernel/netlink.py's codec.

nfnetlink's family header is struct nfgenmsg: the address family, a version, and a
resource id in network order (the subsystem for a batch's BEGIN). Integers in nfnetlink
attributes travel in network order, and nested attributes carry NLA_F_NESTED.
"""

from cni_bridge.kernel.netlink import NLM_F_ACK, NLM_F_DUMP, Attrs, MessageType

NETLINK_NETFILTER = 12
NFNETLINK_V0 = 0
NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_BRIDGE, NFPROTO_IPV6 = 1, 2, 7, 10

NFT_MSG_DELCHAIN = 5
NFT_MSG_GETCHAIN = 4
NFT_MSG_GETRULE = 7
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_DELSETELEM = 14
NFT_MSG_GETGEN = 16
NFT_JUMP = 0xFFFFFFFD  # -3 as the kernel's u32
NFT_GOTO = 0xFFFFFFFC  # -4

IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2

# userdata (libnftnl's TLV list: u8 type, u8 length, value): the comment is type 0, NUL-terminated
UDATA_COMMENT = 0

BATCH = Attrs({"NFNL_BATCH_GENID": (1, "be32")})
GEN = Attrs({"NFTA_GEN_ID": (1, "be32")})

HOOK = Attrs({
    "NFTA_HOOK_HOOKNUM": (1, "be32"),
    "NFTA_HOOK_PRIORITY": (2, "be32"),
})
CHAIN = Attrs({
    "NFTA_CHAIN_TABLE": (1, "str"),
    "NFTA_CHAIN_NAME": (3, "str"),
    "NFTA_CHAIN_HOOK": (4, HOOK, "nested"),
    "NFTA_CHAIN_USE": (6, "be32"),
    "NFTA_CHAIN_TYPE": (7, "str"),
})
RULE = Attrs({
    "NFTA_RULE_TABLE": (1, "str"),
    "NFTA_RULE_CHAIN": (2, "str"),
    "NFTA_RULE_HANDLE": (3, "be64"),
    "NFTA_RULE_USERDATA": (7, "bytes"),
})
SET = Attrs({
    "NFTA_SET_TABLE": (1, "str"),
    "NFTA_SET_NAME": (2, "str"),
})
VERDICT = Attrs({
    "NFTA_VERDICT_CODE": (1, "be32"),
    "NFTA_VERDICT_CHAIN": (2, "str"),
})
DATA = Attrs({
    "NFTA_DATA_VALUE": (1, "bytes"),
    "NFTA_DATA_VERDICT": (2, VERDICT, "nested"),
})
SET_ELEM = Attrs({
    "NFTA_SET_ELEM_KEY": (1, DATA, "nested"),
    "NFTA_SET_ELEM_DATA": (2, DATA, "nested"),
    "NFTA_SET_ELEM_FLAGS": (3, "be32"),
    "NFTA_SET_ELEM_USERDATA": (6, "bytes"),
    "NFTA_SET_ELEM_KEY_END": (10, DATA, "nested"),
})
SET_ELEM_LIST_ELEMENTS = Attrs({"NFTA_LIST_ELEM": (1, SET_ELEM, "list nested")})
SET_ELEM_LIST = Attrs({
    "NFTA_SET_ELEM_LIST_TABLE": (1, "str"),
    "NFTA_SET_ELEM_LIST_SET": (2, "str"),
    "NFTA_SET_ELEM_LIST_ELEMENTS": (3, SET_ELEM_LIST_ELEMENTS, "nested"),
})

_NFGENMSG = ("!BBH", ("family", "version", "res_id"))
BATCH_MSG = MessageType(*_NFGENMSG, BATCH)
GEN_MSG = MessageType(*_NFGENMSG, GEN)
CHAIN_MSG = MessageType(*_NFGENMSG, CHAIN)
RULE_MSG = MessageType(*_NFGENMSG, RULE)
SET_MSG = MessageType(*_NFGENMSG, SET)
SET_ELEM_MSG = MessageType(*_NFGENMSG, SET_ELEM_LIST)

# ---- conntrack ------------------------------------------------------------------------------

CT_PROTO = Attrs({
    "CTA_PROTO_NUM": (1, "u8"),
    "CTA_PROTO_SRC_PORT": (2, "be16"),
    "CTA_PROTO_DST_PORT": (3, "be16"),
})
CT_IP = Attrs({
    "CTA_IP_V4_SRC": (1, "ip"),
    "CTA_IP_V4_DST": (2, "ip"),
    "CTA_IP_V6_SRC": (3, "ip"),
    "CTA_IP_V6_DST": (4, "ip"),
})
CT_TUPLE = Attrs({
    "CTA_TUPLE_IP": (1, CT_IP, "nested"),
    "CTA_TUPLE_PROTO": (2, CT_PROTO, "nested"),
    "CTA_TUPLE_ZONE": (3, "be16"),
})
# What a dump compares with the original tuple: CTA_FILTER_FLAG(CTA_PROTO_NUM) and
# CTA_FILTER_FLAG(CTA_PROTO_DST_PORT) (flags in host order).
CT_FILTER = Attrs({
    "CTA_FILTER_ORIG_FLAGS": (1, "u32"),
    "CTA_FILTER_REPLY_FLAGS": (2, "u32"),
})
CTA_FILTER_PROTO_NUM = 1 << 3
CTA_FILTER_PROTO_DST_PORT = 1 << 5
CT = Attrs({
    "CTA_TUPLE_ORIG": (1, CT_TUPLE, "nested"),
    "CTA_TUPLE_REPLY": (2, CT_TUPLE, "nested"),
    "CTA_STATUS": (3, "be32"),
    "CTA_ID": (12, "be32"),
    "CTA_ZONE": (18, "be16"),
    "CTA_FILTER": (25, CT_FILTER, "nested"),
})
CT_MSG = MessageType(*_NFGENMSG, CT)


def nft_type(msg: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | msg


def ct_type(msg: int) -> int:
    return NFNL_SUBSYS_CTNETLINK << 8 | msg


def batch_begin(genid: int | None = None) -> bytes:
    """A batch's BEGIN; with genid the kernel refuses the batch (ERESTART) if the ruleset
    changed since that generation, which makes "check, then change" one atomic step."""
    attrs = [("NFNL_BATCH_GENID", genid)] if genid is not None else []
    return BATCH_MSG.message(NFNL_MSG_BATCH_BEGIN, 0, {"res_id": NFNL_SUBSYS_NFTABLES}, attrs)


def batch_end() -> bytes:
    return BATCH_MSG.message(NFNL_MSG_BATCH_END, 0, {"res_id": NFNL_SUBSYS_NFTABLES})


def get_gen_request() -> bytes:
    return GEN_MSG.message(nft_type(NFT_MSG_GETGEN), 0, {})


def list_chains_request(family: int, table: str) -> bytes:
    return CHAIN_MSG.message(nft_type(NFT_MSG_GETCHAIN), NLM_F_DUMP, {"family": family},
                             [("NFTA_CHAIN_TABLE", table)])


def list_rules_request(family: int, table: str) -> bytes:
    return RULE_MSG.message(nft_type(NFT_MSG_GETRULE), NLM_F_DUMP, {"family": family}, [("NFTA_RULE_TABLE", table)])


def list_sets_request(family: int, table: str) -> bytes:
    return SET_MSG.message(nft_type(NFT_MSG_GETSET), NLM_F_DUMP, {"family": family}, [("NFTA_SET_TABLE", table)])


def get_chain_request(family: int, table: str, chain: str) -> bytes:
    return CHAIN_MSG.message(nft_type(NFT_MSG_GETCHAIN), 0, {"family": family},
                             [("NFTA_CHAIN_TABLE", table), ("NFTA_CHAIN_NAME", chain)])


def delete_chain_request(family: int, table: str, chain: str) -> bytes:
    return CHAIN_MSG.message(nft_type(NFT_MSG_DELCHAIN), NLM_F_ACK, {"family": family},
                             [("NFTA_CHAIN_TABLE", table), ("NFTA_CHAIN_NAME", chain)])


def element_attrs(key: bytes, key_end: bytes | None = None, data=None, comment: str | None = None) -> list:
    """One set element: its key (and an interval's end), its data (bytes, or ("jump", chain)
    for a verdict map) and its comment."""
    attrs = [("NFTA_SET_ELEM_KEY", [("NFTA_DATA_VALUE", key)])]
    if key_end is not None:
        attrs.append(("NFTA_SET_ELEM_KEY_END", [("NFTA_DATA_VALUE", key_end)]))
    if isinstance(data, tuple):
        verb, chain = data
        code = NFT_JUMP if verb == "jump" else NFT_GOTO
        attrs.append(("NFTA_SET_ELEM_DATA", [("NFTA_DATA_VERDICT", [("NFTA_VERDICT_CODE", code),
                                                                     ("NFTA_VERDICT_CHAIN", chain)])]))
    elif data is not None:
        attrs.append(("NFTA_SET_ELEM_DATA", [("NFTA_DATA_VALUE", data)]))
    if comment is not None:
        attrs.append(("NFTA_SET_ELEM_USERDATA", udata_comment(comment)))
    return attrs


def set_elements_message(msg: int, flags: int, family: int, table: str, set_name: str, elements: list) -> bytes:
    """NEWSETELEM / DELSETELEM / GETSETELEM for `elements` (lists of element_attrs)."""
    attrs = [("NFTA_SET_ELEM_LIST_TABLE", table), ("NFTA_SET_ELEM_LIST_SET", set_name)]
    if elements:
        attrs.append(("NFTA_SET_ELEM_LIST_ELEMENTS", [("NFTA_LIST_ELEM", e) for e in elements]))
    return SET_ELEM_MSG.message(nft_type(msg), flags, {"family": family}, attrs)


def udata_comment(comment: str) -> bytes:
    value = comment.encode() + b"\0"
    return bytes([UDATA_COMMENT, len(value)]) + value


def udata_find_comment(udata: bytes | None) -> str:
    """The comment in a libnftnl userdata TLV list, or ""."""
    pos = 0
    udata = udata or b""
    while pos + 2 <= len(udata):
        kind, length = udata[pos], udata[pos + 1]
        if kind == UDATA_COMMENT:
            return udata[pos + 2:pos + 2 + length].split(b"\0", 1)[0].decode(errors="replace")
        pos += 2 + length
    return ""


# ---- conntrack requests ---------------------------------------------------------------------


def conntrack_dump_request(family: int, protocol: int, dst_port: int) -> bytes:
    """A dump of the entries of `family` (NFPROTO_IPV4 or NFPROTO_IPV6) whose original
    direction is `protocol` to `dst_port`, filtered by the kernel (Linux 5.8 and later; an
    older kernel ignores the filter and sends every entry, so the caller filters again)."""
    wanted = [("CTA_TUPLE_PROTO", [("CTA_PROTO_NUM", protocol), ("CTA_PROTO_DST_PORT", dst_port)])]
    flags = CTA_FILTER_PROTO_NUM | CTA_FILTER_PROTO_DST_PORT
    return CT_MSG.message(ct_type(IPCTNL_MSG_CT_GET), NLM_F_DUMP, {"family": family},
                          [("CTA_TUPLE_ORIG", wanted), ("CTA_FILTER", [("CTA_FILTER_ORIG_FLAGS", flags)])])


def conntrack_delete_request(family: int, orig: dict, entry_id: int | None = None, zone: int | None = None) -> bytes:
    """Delete the one entry whose original tuple is `orig` (CTA_TUPLE_ORIG as decoded from a
    dump: addresses, protocol and both ports), and whose id is `entry_id` when given.

    A delete without a tuple flushes the whole table, so an incomplete tuple is a
    ValueError here rather than a message."""
    ip, proto = orig.get("CTA_TUPLE_IP") or {}, orig.get("CTA_TUPLE_PROTO") or {}
    names = ("CTA_IP_V4_SRC", "CTA_IP_V4_DST") if family == NFPROTO_IPV4 else ("CTA_IP_V6_SRC", "CTA_IP_V6_DST")
    ports = ("CTA_PROTO_NUM", "CTA_PROTO_SRC_PORT", "CTA_PROTO_DST_PORT")
    if family not in (NFPROTO_IPV4, NFPROTO_IPV6) or any(ip.get(n) is None for n in names) or any(
            proto.get(n) is None for n in ports):
        raise ValueError(f"a conntrack delete needs a whole tuple, not {orig!r}")
    attrs = [("CTA_TUPLE_ORIG", [("CTA_TUPLE_IP", [(n, ip[n]) for n in names]),
                                 ("CTA_TUPLE_PROTO", [(n, proto[n]) for n in ports])])]
    if entry_id is not None:
        attrs.append(("CTA_ID", entry_id))
    if zone:
        attrs.append(("CTA_ZONE", zone))
    return CT_MSG.message(ct_type(IPCTNL_MSG_CT_DELETE), 0, {"family": family}, attrs)
