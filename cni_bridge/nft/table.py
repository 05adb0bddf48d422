"""Our nftables tables: the one owner of everything the plugins keep in nftables.

Each feature (nft/masq.py, nft/spoof.py, nft/portmap.py) describes its part as pure data:
a Layout (its chains, sets and rules as libnftables JSON, and the comment tags a healthy
copy of its rules carries) and Elements (set and map members, each owned by one
attachment through its comment). This module applies them:

- A layout is written with libnftables, in one transaction that repairs what is damaged:
  a missing chain is created with its rules, a damaged one flushed and refilled, an intact
  one left alone. It is idempotent, repairs a flushed or half-deleted layout, and never
  leaves a moment in which the rules are missing for containers already running. It only
  adds where it can: re-adding a chain that exists, or flushing one that holds rules,
  makes the kernel free objects, and the process then waits for an RCU grace period at
  exit.
- Elements go as raw nfnetlink batches (kernel/nfnl.py), as do the reads: the per-pod work
  then costs two round trips and no libnftables at all.
- ADD checks the layout (a dump of our table's rules, compared with the tags) and adds the
  elements in one atomic step: the element batch names the ruleset generation the check
  saw, and the kernel refuses it (ERESTART) if anything changed in between. A layout that
  is missing or damaged is written anew first; a table that was lost altogether gets back
  the elements of the attachments that still exist (the feature says which).
- DEL looks its elements up by key and checks their owner, so it lists a set only when
  the plugin cannot name an attachment's keys (no prevResult, say). Its batch names the
  generation the lookup saw, as GC's does, so an element that changed hands meanwhile
  stays. A chain no element jumps to any more can be removed (prune_chains: the kernel
  refuses to delete a chain that is still referenced, which makes that safe against a
  concurrent ADD).

Ownership and ordering: an attachment (network, container id, ifname) owns its elements
through their comment, `attachment_key`. A DEL removes its elements before the attachment's
address is released, so an address is never leased to a new container while an element
still names the old one; GC and DEL can therefore trust the comment.

Both sockets live until the process exits: closing an nfnetlink socket after a change that
freed kernel objects waits for an RCU grace period, and at exit that wait has overlapped
the rest of the work. We never ask libnftables to echo, and never list the whole ruleset.

Imports: the protocol layer and kernel/netlink + kernel/nfnl; ctypes only when a layout
has to be written (libnftables).
"""

import os
import sys

from cni_bridge.cni import errors, wire
from cni_bridge.kernel import nfnl
from cni_bridge.kernel.netlink import NLM_F_CREATE, NLM_F_EXCL, NetlinkError, NetlinkSocket

TABLE = "cni_bridge"
FAMILIES = {"inet": nfnl.NFPROTO_INET, "bridge": nfnl.NFPROTO_BRIDGE}
# The nft parser rejects longer comments ("128 characters maximum allowed"), so a listing
# with one could not be restored with `nft -f`; libnftables' JSON input does not check.
COMMENT_MAX = 128
_HASH_LEN = 32  # hex digits of sha256: 128 bits
ENOENT, EEXIST, EBUSY, ENODATA, ERESTART, ENOBUFS = 2, 17, 16, 61, 85, 105
_TRIES = 8  # attempts of a change whose checks a concurrent change made stale
# Element changes per batch where the whole need not be atomic: few enough that the
# kernel's answers (one per failed change) fit the socket's receive buffer.
_PER_BATCH = 128


class Layout:
    """A feature's chains, sets and rules in one of our tables, as libnftables JSON objects.

    objects: the table and the sets and maps ("add" of one that exists changes nothing).
    chains: chain name -> its chain object (with type, hook and priority for a base chain).
    rules: chain name -> [(tag, rule object)], in order; every rule's comment is its tag,
    and a chain whose rules' tags differ from these is damaged.
    syntax_objects: objects in nft syntax ("add map ..."), for what libnftables 1.0's JSON
    input cannot describe (a map whose data is a concatenation: its parser refuses the type).
    They are added first, in a transaction of their own; re-adding changes nothing.
    """

    def __init__(self, family: str, objects: list[dict], chains: dict[str, dict],
                 rules: dict[str, list[tuple[str, dict]]], syntax_objects: list[str] = ()):
        self.family = family
        self.objects = objects
        self.chains = chains
        self.rules = rules
        self.syntax_objects = list(syntax_objects)

    def tags(self, chain: str) -> list[str]:
        return [tag for tag, _ in self.rules.get(chain, [])]

    def commands(self, existing_chains: set[str], rules: dict[str, list[str]]) -> list[dict]:
        """One transaction that repairs the layout, given the chains that exist and the tags
        of their rules: a missing chain is created and filled, a damaged one flushed (which
        frees nothing when it is empty) and refilled, an intact one left alone."""
        commands = [{"add": {kind: body}} for item in self.objects for kind, body in item.items()]
        fill = []
        for name, chain in self.chains.items():
            if name in existing_chains and rules.get(name, []) == self.tags(name):
                continue
            if name in existing_chains:
                commands.append({"flush": {"chain": {"family": self.family, "table": TABLE, "name": name}}})
            else:  # create, not add: two ADDs repairing at once must not both fill it
                commands.append({"create": {"chain": chain}})
            fill.append(name)
        for name in fill:
            commands += [{"add": {"rule": {**rule, "comment": tag}}} for tag, rule in self.rules.get(name, [])]
        return commands


class Element:
    """A member of one of our sets or maps: key (and an interval's end) and data as the
    kernel stores them, and the owner's comment."""

    __slots__ = ("set", "key", "key_end", "data", "comment")

    def __init__(self, set_name: str, key: bytes, data=None, comment: str = "", key_end: bytes | None = None):
        self.set = set_name
        self.key = key
        self.key_end = key_end
        self.data = data  # None, bytes, or ("jump", chain) in a verdict map
        self.comment = comment

    def __eq__(self, other) -> bool:
        return isinstance(other, Element) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return f"Element({self.set!r}, {self.key.hex()}, {self.data!r}, {self.comment!r})"

    def attrs(self, with_data: bool = True) -> list:
        return nfnl.element_attrs(self.key, self.key_end, self.data if with_data else None,
                                  self.comment if with_data else None)


# ---- attachment keys (the element comments) --------------------------------------------


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    """The comment that marks an attachment's elements: `network/containerid/ifname`.

    When that is longer than COMMENT_MAX, the id and ifname are replaced by a hash
    (`network/#<hash>`), and the network too if it is very long (`#<hash>/#<hash>`); GC
    recomputes the same forms from (network, id, ifname).
    """
    plain = f"{network}/{container_id}/{ifname}"
    if len(plain.encode()) <= COMMENT_MAX:
        return plain
    digest = _sha(f"{network}\0{container_id}\0{ifname}")
    return f"{_network_prefix(network)}#{digest}"


def _network_prefix(network: str) -> str:
    """What every key of `network` starts with, hashed or not."""
    if len(network.encode()) + 2 + _HASH_LEN <= COMMENT_MAX:
        return f"{network}/"
    return f"#{_sha(network)}/"


def _sha(text: str) -> str:
    import hashlib  # only for names too long for a plain key

    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def split_key(network: str, comment: str) -> tuple[str, str] | None:
    """(container_id, ifname) of a key of `network`; ("", "") if hashed; None if not ours."""
    prefix = _network_prefix(network)
    if not comment.startswith(prefix):
        return None
    rest = comment[len(prefix):]
    if rest.startswith("#"):
        return ("", "")
    container_id, sep, ifname = rest.rpartition("/")
    return (container_id, ifname) if sep else None


def stale_keys(network: str, comments, valid: set[tuple[str, str]]) -> set[str]:
    """Which of `comments` belong to `network` but to no attachment in `valid` (for GC)."""
    keep = {attachment_key(network, cid, ifname) for cid, ifname in valid}
    return {c for c in comments if split_key(network, c) is not None and c not in keep}


# ---- element keys as the kernel stores them ------------------------------------------------


def ip_key(text: str) -> bytes:
    from _socket import AF_INET, AF_INET6, inet_pton

    return inet_pton(AF_INET6 if ":" in text else AF_INET, text)


def ifname_key(name: str) -> bytes:
    """An ifname set key: IFNAMSIZ bytes, NUL padded."""
    return name.encode().ljust(16, b"\0")


def concat(*fields: bytes) -> bytes:
    """A concatenated key: each field padded to the kernel's 4-byte registers."""
    return b"".join(f + b"\0" * (-len(f) % 4) for f in fields)


# ---- the two connections to the kernel --------------------------------------------------------

_netlink = None  # the process's nfnetlink socket; see the module docstring
_libnftables = None


def _socket() -> NetlinkSocket:
    global _netlink
    if _netlink is None:
        try:
            _netlink = NetlinkSocket.open(nfnl.NETLINK_NETFILTER)
        except OSError as err:
            raise errors.CNIError(errors.INTERNAL, "nftables: cannot open a netlink socket", str(err)) from None
    return _netlink


class _Libnftables:
    """The few libnftables calls we make, through ctypes. Its context lives until exit."""

    OUTPUT_JSON = 1 << 4  # libnftables 1.0 reads JSON input only while JSON output is on

    def __init__(self):
        import ctypes

        try:
            lib = ctypes.CDLL(_library_path())
        except OSError as err:
            raise errors.CNIError(errors.INTERNAL, "nftables: cannot load libnftables", str(err)) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_output_set_flags", "nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p] + ([ctypes.c_uint] if "flags" in name else [])
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        if not self.ctx:
            raise errors.CNIError(errors.INTERNAL, "nftables: cannot create a libnftables context")
        lib.nft_ctx_output_set_flags(self.ctx, self.OUTPUT_JSON)
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, commands: list[dict] | str) -> tuple[int, str]:
        """One transaction: JSON commands, or nft syntax (which the JSON parser hands on to
        the nft parser)."""
        if isinstance(commands, str):
            batch = commands.encode()
        else:
            batch = wire.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, batch)
        err = self.lib.nft_ctx_get_error_buffer(self.ctx) or b""
        return rc, err.decode(errors="replace").strip()


def _library_path() -> str:
    # A frozen build carries libnftables at the top of its bundle.
    bundled = os.path.join(getattr(sys, "_MEIPASS", ""), "libnftables.so.1")
    return bundled if getattr(sys, "frozen", False) and os.path.exists(bundled) else "libnftables.so.1"


def _libnftables_context() -> _Libnftables:
    global _libnftables
    if _libnftables is None:
        _libnftables = _Libnftables()
    return _libnftables


def write_layout(layout: Layout) -> None:
    """Write a layout with libnftables (one transaction; see the module docstring)."""
    if layout.syntax_objects:
        table = f"add table {layout.family} {TABLE}"
        rc, err = _libnftables_context().run("\n".join([table, *layout.syntax_objects]))
        if rc != 0:
            raise errors.CNIError(errors.INTERNAL, "nftables: cannot set up our table", err)
    err = ""
    for _ in range(_TRIES):
        existing = set(chain_uses(layout.family))
        rules = _generation_and_rules(FAMILIES[layout.family])[1]
        rc, err = _libnftables_context().run(layout.commands(existing, rules))
        if rc == 0:
            return
        if "File exists" not in err:  # a concurrent ADD created a chain first: look again
            break
    raise errors.CNIError(errors.INTERNAL, "nftables: cannot set up our table", err)


# ---- reads ---------------------------------------------------------------------------------------


def _generation_and_rules(family: int) -> tuple[int, dict[str, list[str]]]:
    """The ruleset generation and our table's rules (chain -> comment tags in order), read
    in one round trip; {} when the table holds none (or does not exist: a dump of a
    missing table's rules is empty)."""
    gen, rules = _socket().exchange([
        (nfnl.get_gen_request(), "nftables: get generation"),
        (nfnl.list_rules_request(family, TABLE), "nftables: list our rules"),
    ])
    if isinstance(gen, NetlinkError):
        raise _failed(gen)
    genid = nfnl.GEN_MSG.decode(gen[0])[1]["NFTA_GEN_ID"]
    if isinstance(rules, NetlinkError):
        if rules.errno == ENOENT:
            return genid, {}
        raise _failed(rules)
    chains: dict[str, list[str]] = {}
    for message in rules:
        attrs = nfnl.RULE_MSG.decode(message)[1]
        chains.setdefault(attrs["NFTA_RULE_CHAIN"], []).append(nfnl.udata_find_comment(attrs.get("NFTA_RULE_USERDATA")))
    return genid, chains


def _generation() -> int:
    """The ruleset generation, for a batch that must not apply if anything changed since."""
    try:
        reply = _socket().request(nfnl.get_gen_request(), "nftables: get generation")
    except NetlinkError as err:
        raise _failed(err) from None
    return nfnl.GEN_MSG.decode(reply[0])[1]["NFTA_GEN_ID"]


def layout_problems(layout: Layout) -> list[str]:
    """What is wrong with a feature's layout in the kernel, in words ([] when intact)."""
    _, rules = _generation_and_rules(FAMILIES[layout.family])
    return _compare(layout, rules)


def _compare(layout: Layout, rules: dict[str, list[str]]) -> list[str]:
    # A missing table and one whose chains were flushed read alike (no rules), so each
    # chain speaks for itself.
    problems = []
    for chain in layout.chains:
        tags = layout.tags(chain)
        present = rules.get(chain, [])
        if present != tags:
            if not present:
                problems.append(f"chain {chain} is empty or missing")
            else:
                problems.append(f"chain {chain} holds rules {present}, not {tags}")
    return problems


def lookup(family: str, elements: list[Element]) -> list[Element | None]:
    """The kernel's copy of each element (found by key, with its data and comment), or None.
    In an interval set a key finds the element whose range holds it."""
    return _generation_and_lookup(family, elements, with_generation=False)[1]


def _generation_and_lookup(family: str, elements: list[Element], with_generation: bool = True):
    """(the ruleset generation, read before the lookups, or None; lookup(elements)), in one
    round trip."""
    requests = [(nfnl.get_gen_request(), "nftables: get generation")] if with_generation else []
    requests += [(nfnl.set_elements_message(nfnl.NFT_MSG_GETSETELEM, 0, FAMILIES[family], TABLE, e.set,
                                            [e.attrs(with_data=False)]), f"nftables: get element of {e.set}")
                 for e in elements]
    if not requests:
        return None, []
    outcomes = _socket().exchange(requests)
    genid = None
    if with_generation:
        gen, outcomes = outcomes[0], outcomes[1:]
        if isinstance(gen, NetlinkError):
            raise _failed(gen)
        genid = nfnl.GEN_MSG.decode(gen[0])[1]["NFTA_GEN_ID"]
    found = []
    for element, outcome in zip(elements, outcomes):
        if isinstance(outcome, NetlinkError):
            if outcome.errno not in (ENOENT, ENODATA):  # no table, no set or no such element
                raise _failed(outcome)
            found.append(None)
        else:
            stored = _parse_elements(element.set, outcome)
            found.append(stored[0] if stored else None)
    return genid, found


def _unique(elements) -> list[Element]:
    """Each element once (two keys may find the same element of an interval set)."""
    return list({(e.set, e.key): e for e in elements if e is not None}.values())


def elements(family: str, set_name: str) -> list[Element]:
    """Every element of one of our sets (for GC and listings); [] when there is none."""
    message = nfnl.set_elements_message(nfnl.NFT_MSG_GETSETELEM, 0x300, FAMILIES[family], TABLE, set_name, [])
    try:
        replies = _socket().request(message, f"nftables: list {set_name}")
    except NetlinkError as err:
        if err.errno == ENOENT:
            return []
        raise _failed(err) from None
    return _parse_elements(set_name, replies)


def _parse_elements(set_name: str, replies: list[bytes]) -> list[Element]:
    found = []
    for message in replies:
        attrs = nfnl.SET_ELEM_MSG.decode(message)[1]
        for item in (attrs.get("NFTA_SET_ELEM_LIST_ELEMENTS") or {}).get("NFTA_LIST_ELEM", ()):
            key = (item.get("NFTA_SET_ELEM_KEY") or {}).get("NFTA_DATA_VALUE", b"")
            key_end = (item.get("NFTA_SET_ELEM_KEY_END") or {}).get("NFTA_DATA_VALUE")
            data = item.get("NFTA_SET_ELEM_DATA") or {}
            verdict = data.get("NFTA_DATA_VERDICT")
            if verdict is not None:
                verb = "jump" if verdict.get("NFTA_VERDICT_CODE") == nfnl.NFT_JUMP else "goto"
                value = (verb, verdict.get("NFTA_VERDICT_CHAIN", ""))
            else:
                value = data.get("NFTA_DATA_VALUE")
            comment = nfnl.udata_find_comment(item.get("NFTA_SET_ELEM_USERDATA"))
            found.append(Element(set_name, key, value, comment, key_end))
    return found


def set_names(family: str) -> list[str]:
    """The sets and maps of our table in that family; [] without the table."""
    try:
        replies = _socket().request(nfnl.list_sets_request(FAMILIES[family], TABLE), "nftables: list our sets")
    except NetlinkError as err:
        if err.errno == ENOENT:
            return []
        raise _failed(err) from None
    return [nfnl.SET_MSG.decode(message)[1]["NFTA_SET_NAME"] for message in replies]


def chain_uses(family: str, chains: list[str] | None = None) -> dict[str, int]:
    """How many references each chain holds (its own rules count), for the given chains
    (missing ones left out) or, with None, for every chain of our table."""
    number = FAMILIES[family]
    if chains is None:
        try:
            replies = _socket().request(nfnl.list_chains_request(number, TABLE), "nftables: list our chains")
        except NetlinkError as err:
            if err.errno == ENOENT:
                return {}
            raise _failed(err) from None
        outcomes = [[reply] for reply in replies]
    else:
        outcomes = _socket().exchange([(nfnl.get_chain_request(number, TABLE, chain), f"nftables: get chain {chain}")
                                       for chain in chains])
    uses = {}
    for outcome in outcomes:
        if isinstance(outcome, NetlinkError):
            if outcome.errno != ENOENT:
                raise _failed(outcome)
            continue
        attrs = nfnl.CHAIN_MSG.decode(outcome[0])[1]
        uses[attrs["NFTA_CHAIN_NAME"]] = attrs.get("NFTA_CHAIN_USE", 0)
    return uses


# ---- changes -------------------------------------------------------------------------------------


def _batch(family: str, changes: list[tuple[int, int, Element]], genid: int | None, what: str) -> None:
    """One atomic nfnetlink batch of element changes (message type, flags, element)."""
    messages = [nfnl.batch_begin(genid)]
    for msg_type, flags, element in changes:
        messages.append(nfnl.set_elements_message(msg_type, flags, FAMILIES[family], TABLE, element.set,
                                                  [element.attrs(with_data=msg_type == nfnl.NFT_MSG_NEWSETELEM)]))
    messages.append(nfnl.batch_end())
    _socket().send_batch(messages, what)


def add(layout_of, new: list[Element], restore=None, check=None) -> None:
    """Add an attachment's elements, with the layout they depend on intact.

    layout_of(elements) -> Layout: the layout the given elements need. restore() -> the
    elements of every attachment that still exists, put back when the layout was missing
    or a set of it was (the table lost, say). check() -> raises CNIError when the elements
    must not go in (a port another attachment holds, say); it runs after the generation is
    read, so what it saw cannot change before the batch.

    The batch of the attachment's elements names the generation its checks saw, so
    nothing that changed in between (a DEL, a flush) is overwritten; a batch the kernel
    refuses for that (ERESTART) is simply tried again.
    """
    if not new:
        return
    layout = layout_of(new)
    family = FAMILIES[layout.family]
    for _ in range(_TRIES):
        genid, rules = _generation_and_rules(family)
        if check is not None:
            check()
        if _compare(layout, rules):
            _repair(layout_of, new, restore if _sets_missing(layout) else None)
            continue  # look again: the batch must name a generation that has the layout
        # An element under one of our keys, or one whose range holds either end of ours,
        # is stale (an address or port left by an attachment whose DEL never ran): ours
        # replaces it, in the same batch. The kernel refuses an overlap it finds the same way;
        # a stale range that ours holds whole overlaps at neither end, so both stay until GC.
        ends = [Element(e.set, e.key_end, key_end=e.key_end) for e in new if e.key_end is not None]
        changes = [(nfnl.NFT_MSG_DELSETELEM, 0, old) for old in _unique(lookup(layout.family, new + ends))]
        changes += [(nfnl.NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, e) for e in new]
        try:
            _batch(layout.family, changes, genid, "nftables: add elements")
            return
        except NetlinkError as err:
            if err.errno == ENOENT:  # a set went missing, the rules' tags notwithstanding
                _repair(layout_of, new, restore)
            elif err.errno == EEXIST and _generation() == genid:
                raise errors.CNIError(errors.INTERNAL, "nftables: an element overlaps one the kernel holds",
                                      str(err)) from None
            elif err.errno not in (ERESTART, EEXIST):  # EEXIST: one was added since we looked
                raise _failed(err) from None
    raise errors.CNIError(errors.INTERNAL, "nftables: cannot add elements", "the ruleset kept changing")


def _sets_missing(layout: Layout) -> bool:
    """Whether a set or map of the layout is gone, and the elements in it with it (a flushed
    or deleted chain loses none)."""
    wanted = {body["name"] for item in layout.objects for kind, body in item.items() if kind in ("set", "map")}
    return not wanted <= set(set_names(layout.family))


def _repair(layout_of, new: list[Element], restore) -> None:
    """Write the layout; with restore, write it for every attachment that still exists too
    and put their elements back.

    That add is a plain one (not exclusive: another healing ADD may put the same elements
    back at once) naming no generation, since every ADD commits a batch and a healing ADD
    among many would otherwise never get its turn. An attachment whose DEL ran meanwhile
    found nothing to delete, so its elements are looked for again once its lease is seen
    gone, and removed."""
    keys = {(e.set, e.key) for e in new}

    def others() -> list[Element]:
        return [e for e in (restore() if restore else []) if (e.set, e.key) not in keys]

    restored = others()
    layout = layout_of(new + restored)
    write_layout(layout)
    if not restored:
        return
    try:
        for start in range(0, len(restored), _PER_BATCH):
            _batch(layout.family, [(nfnl.NFT_MSG_NEWSETELEM, NLM_F_CREATE, e) for e in restored[start:start + _PER_BATCH]],
                   None, "nftables: restore elements")
    except NetlinkError as err:
        raise _failed(err) from None
    still_leased = {(e.set, e.key, e.comment) for e in others()}
    gone: dict[str, list[Element]] = {}
    for e in restored:
        if (e.set, e.key, e.comment) not in still_leased:
            gone.setdefault(e.comment, []).append(e)
    for owner, elements_of_owner in gone.items():
        remove(layout.family, owner, elements_of_owner)


def remove(family: str, owner: str, candidates: list[Element]) -> list[Element]:
    """Delete those of `candidates` (found by key) that the kernel holds for `owner`."""
    def find():
        genid, stored = _generation_and_lookup(family, candidates)
        return genid, [e for e in _unique(stored) if e.comment == owner]

    return _delete_found(family, find)


def remove_owned(family: str, set_names: list[str], owner: str) -> list[Element]:
    """Delete every element of these sets that `owner` owns (for a DEL that cannot name
    the keys): a listing of each set."""
    def find():
        genid = _generation()
        return genid, [e for name in set_names for e in elements(family, name) if e.comment == owner]

    return _delete_found(family, find)


def remove_stale(family: str, set_names: list[str], network: str, valid: set[tuple[str, str]]) -> list[Element]:
    """GC: delete the elements of these sets that belong to `network` but to no attachment
    in `valid` (container id, ifname)."""
    def find():
        genid = _generation()
        found = [e for name in set_names for e in elements(family, name)]
        stale = stale_keys(network, {e.comment for e in found}, valid)
        return genid, [e for e in found if e.comment in stale]

    return _delete_found(family, find)


def _delete_found(family: str, find) -> list[Element]:
    """Delete what find() -> (generation, the kernel's copies of the doomed elements) names;
    return what went.

    Each batch (of at most _PER_BATCH) names the generation find() read before it looked,
    so an element that changed hands meanwhile (a stale one an ADD took over) is not
    deleted: the kernel refuses the batch (ERESTART) and find() looks again. A batch of our
    own moves the generation by one, which the next batch names. _TRIES counts failures in
    a row: each batch that goes in is progress, so the loop ends."""
    deleted, failures = [], 0
    genid, doomed = find()
    while doomed:
        chunk = doomed[:_PER_BATCH]
        try:
            _batch(family, [(nfnl.NFT_MSG_DELSETELEM, 0, e) for e in chunk], genid, "nftables: delete elements")
            deleted += chunk
            doomed = doomed[_PER_BATCH:]
            genid = (genid + 1) & 0xFFFFFFFF or 1  # the kernel skips generation 0
            failures = 0
        except NetlinkError as err:
            # ERESTART: something changed; ENOENT: deleted by another meanwhile; ENOBUFS:
            # more failures than the answers hold. The kernel applied nothing: look again.
            if err.errno not in (ERESTART, ENOENT, ENOBUFS):
                raise _failed(err) from None
            failures += 1
            if failures == _TRIES:
                raise errors.CNIError(errors.INTERNAL, "nftables: cannot delete elements",
                                      "the ruleset kept changing") from None
            genid, doomed = find()
    return deleted


def prune_chains(family: str, chains: dict[str, int]) -> list[str]:
    """Delete those of `chains` (name -> how many rules of its own it holds) that nothing
    refers to any more; return their names. Each goes in a batch of its own that names the
    generation its check saw, so a chain taken up again meanwhile, or one that was flushed
    while something still jumps to it (the kernel refuses: EBUSY), stays and keeps no
    other from going."""
    pruned = []
    for chain, own_rules in chains.items():
        for _ in range(_TRIES):
            genid = _generation()
            uses = chain_uses(family, [chain])
            if chain not in uses or uses[chain] > own_rules:
                break
            messages = [nfnl.batch_begin(genid), nfnl.delete_chain_request(FAMILIES[family], TABLE, chain),
                        nfnl.batch_end()]
            try:
                _socket().send_batch(messages, f"nftables: delete unused chain {chain}")
                pruned.append(chain)
                break
            except NetlinkError as err:
                if err.errno in (EBUSY, ENOENT):
                    break
                if err.errno != ERESTART:
                    raise _failed(err) from None
    return pruned


def remove_objects(family: str, objects: list[dict]) -> None:
    """Delete whole chains or sets of ours (libnftables JSON objects), in one transaction."""
    rc, err = _libnftables_context().run([{"delete": item} for item in objects])
    if rc != 0:
        raise errors.CNIError(errors.INTERNAL, f"nftables: cannot delete from table {family} {TABLE}", err)


def usable() -> None:
    """For STATUS: raise the spec's "not available" (50) unless the kernel answers
    nftables requests."""
    try:
        _socket().request(nfnl.get_gen_request(), "nftables: get generation")
    except (NetlinkError, errors.CNIError) as err:  # a refused request, or no socket at all
        raise errors.CNIError(errors.NOT_AVAILABLE, "nftables is not usable", str(err)) from None


def _failed(err: NetlinkError) -> errors.CNIError:
    return errors.CNIError(errors.INTERNAL, err.op, str(err))
