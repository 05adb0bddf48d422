"""Our nftables layer (cni_bridge.nft) as the bridge's masquerade uses it, against a real
kernel, inside throwaway network namespaces (nftt-*).

Each operation runs the way the plugin runs it: a fresh Python process (its netlink socket
and libnftables context closed at exit), started with `ip netns exec`, so the host's
nftables are never touched. Results are checked with the independent `nft -j` CLI; the
traffic tests check what a listener outside sees as the pod's source address.
"""

import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import time

import pytest

from cni_bridge.nft import table as nft_table

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft CLI"),
]

TIMEOUT = 20  # seconds, for every command we run

# Runs one operation: argv = its name, a JSON list of arguments.
RUNNER = """
import json, sys
from cni_bridge.cni import errors
from cni_bridge.plugins import bridge_firewall as firewall


def key(net, cid, ifname):
    return firewall.attachment_key(net, cid, ifname)


def check(net, cid, ifname, addrs):
    problem = firewall.masquerade_problem(key(net, cid, ifname), addrs)
    if problem:
        raise errors.CNIError(999, "CHECK failed: " + problem)


def add_masquerade_restored_meanwhile(net, cid, ifname, addrs):
    # add_masquerade, with our own elements put in (as another ADD healing the layout
    # restores every leased attachment, with a create that is not exclusive) right after
    # our lookup of them.
    from cni_bridge.kernel import nfnl
    from cni_bridge.kernel.netlink import NLM_F_CREATE
    from cni_bridge.nft import masq, table

    looked_up = table.lookup

    def lookup_then_restore(family, elements):
        found = looked_up(family, elements)
        if not restored:
            restored.append(True)
            ours = masq.elements(key(net, cid, ifname), addrs)
            table._batch(family, [(nfnl.NFT_MSG_NEWSETELEM, NLM_F_CREATE, e) for e in ours], None, "restore")
        return found

    restored = []
    table.lookup = lookup_then_restore
    firewall.add_masquerade(key(net, cid, ifname), addrs)


CALLS = {
    "add_masquerade": lambda net, cid, ifname, addrs: firewall.add_masquerade(key(net, cid, ifname), addrs),
    "add_masquerade_restored_meanwhile": add_masquerade_restored_meanwhile,
    "remove_masquerade": lambda net, cid, ifname, addrs=None: firewall.remove_masquerade(key(net, cid, ifname), addrs),
    "check_masquerade": check,
    "gc_masquerade": lambda net, valid: sorted(e.comment for e in firewall.gc(net, {tuple(v) for v in valid})),
    "check_usable": firewall.usable,
}
name, args = sys.argv[1], json.loads(sys.argv[2])
try:
    result = CALLS[name](*args)
except errors.CNIError as e:
    print(json.dumps({"code": e.code, "msg": e.msg, "details": e.details}))
    sys.exit(1)
print(json.dumps(result))
"""


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=TIMEOUT, **kw)


@pytest.fixture
def make_ns():
    """Factory for named namespaces nftt-<role>-<random>; all deleted at teardown."""
    made = []

    def make(role):
        name = f"nftt-{role}-{secrets.token_hex(3)}"
        sh("ip", "netns", "add", name)
        made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in reversed(made):
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def ns(make_ns):
    return make_ns("h")


def call(ns, name, *args, user=None):
    """Run nft.<name>(*args) in a new process inside `ns`; return its JSON result."""
    cmd = ["ip", "netns", "exec", ns]
    if user is not None:
        cmd += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    res = sh(*cmd, sys.executable, "-c", RUNNER, name, json.dumps(list(args)), check=False)
    if res.returncode != 0:
        raise CallFailed(res.stdout + res.stderr)
    return json.loads(res.stdout)


class CallFailed(Exception):
    pass


def table(ns):
    """`nft -j list table inet cni_bridge`, summarised; None if there is no table."""
    res = sh("ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "cni_bridge", check=False)
    if res.returncode != 0:
        assert "No such file or directory" in res.stderr, res.stderr
        return None
    chains, rules, sets, comments = {}, {}, {}, {}
    for item in json.loads(res.stdout)["nftables"]:
        if "chain" in item:
            c = item["chain"]
            chains[c["name"]] = {k: c[k] for k in ("type", "hook", "prio") if k in c}
            rules.setdefault(c["name"], [])
        elif "rule" in item:
            rules.setdefault(item["rule"]["chain"], []).append(item["rule"]["expr"])
            comments.setdefault(item["rule"]["chain"], []).append(item["rule"].get("comment"))
        elif "set" in item or "map" in item:
            s = item.get("set") or item["map"]
            members = {}
            for member in s.get("elem", []):
                key = member[0] if isinstance(member, list) else member
                if isinstance(key, dict) and "elem" in key:
                    value, comment = key["elem"]["val"], key["elem"].get("comment")
                else:  # an element without a comment
                    value, comment = key, None
                members[json.dumps(value)] = comment
            sets[s["name"]] = members
    return {"chains": chains, "rules": rules, "sets": sets, "comments": comments}


def elements(ns):
    """{pod address: owner} of the pods4/pods6 sets; each must have its pods*_local twin."""
    t = table(ns)
    if t is None:
        return {}
    found = {}
    for family in ("4", "6"):
        pods = {json.loads(k): v for k, v in t["sets"][f"pods{family}"].items()}
        local = {json.loads(k)["concat"][0]: v for k, v in t["sets"][f"pods{family}_local"].items()}
        assert pods == local, (pods, local)
        found.update(pods)
    return found


SADDR4, DADDR4 = ({"payload": {"protocol": "ip", "field": f}} for f in ("saddr", "daddr"))
SADDR6, DADDR6 = ({"payload": {"protocol": "ip6", "field": f}} for f in ("saddr", "daddr"))


def _match(left, right):
    return {"match": {"op": "==", "left": left, "right": right}}


MASQUERADE_RULES = [
    [_match(DADDR4, {"prefix": {"addr": "224.0.0.0", "len": 4}}), {"return": None}],
    [_match({"concat": [SADDR4, DADDR4]}, "@pods4_local"), {"return": None}],
    [_match(SADDR4, "@pods4"), {"masquerade": None}],
    [_match(DADDR6, {"prefix": {"addr": "ff00::", "len": 8}}), {"return": None}],
    [_match({"concat": [SADDR6, DADDR6]}, "@pods6_local"), {"return": None}],
    [_match(SADDR6, "@pods6"), {"masquerade": None}],
]


# --- structure ------------------------------------------------------------------------------


def test_first_add_creates_everything(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    t = table(ns)
    assert t["chains"] == {"pod-masq": {"type": "nat", "hook": "postrouting", "prio": 100}}
    assert t["rules"]["pod-masq"] == MASQUERADE_RULES
    assert t["sets"]["pods4"] == {'"10.88.0.5"': "net/c1/eth0"}
    local = {json.loads(k)["concat"][1]["prefix"]["addr"]: v for k, v in t["sets"]["pods4_local"].items()}
    assert local == {"10.88.0.0": "net/c1/eth0"}  # its own subnet, 10.88.0.0/16
    assert t["sets"]["pods6"] == {} and t["sets"]["pods6_local"] == {}
    assert len(t["comments"]["pod-masq"]) == 6 and all(c.startswith("cni_bridge masq v2") for c in t["comments"]["pod-masq"])


def test_more_adds_add_elements_only(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    before = table(ns)
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.6/16"])
    call(ns, "add_masquerade", "net2", "c3", "eth0", ["10.89.1.7/24"])  # another network, another subnet
    after = table(ns)
    assert after["chains"] == before["chains"] and after["rules"] == before["rules"]  # nothing per subnet
    assert elements(ns) == {"10.88.0.5": "net/c1/eth0", "10.88.0.6": "net/c2/eth0", "10.89.1.7": "net2/c3/eth0"}


def test_repeated_add_is_idempotent(ns):
    for _ in range(2):
        call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    t = table(ns)
    assert t["rules"]["pod-masq"] == MASQUERADE_RULES
    assert elements(ns) == {"10.88.0.5": "net/c1/eth0", "fd00::5": "net/c1/eth0"}


def test_add_takes_over_a_stale_element(ns):
    # An address left behind by a dead attachment and handed out again: the new owner's
    # comment must replace the old one (a plain `add element` would keep the old comment).
    call(ns, "add_masquerade", "net", "dead", "eth0", ["10.88.0.5/16"])
    call(ns, "add_masquerade", "net", "new", "eth0", ["10.88.0.5/16"])
    assert elements(ns) == {"10.88.0.5": "net/new/eth0"}
    assert call(ns, "gc_masquerade", "net", [["new", "eth0"]]) == []
    call(ns, "remove_masquerade", "net", "dead", "eth0")
    assert elements(ns) == {"10.88.0.5": "net/new/eth0"}


def test_ipv6(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "add_masquerade", "net", "c2", "eth0", ["2001:db8:1:2::9/56"])
    local6 = {json.loads(k)["concat"][1]["prefix"]["addr"] for k in table(ns)["sets"]["pods6_local"]}
    assert local6 == {"fd00::", "2001:db8:1::"}
    call(ns, "remove_masquerade", "net", "c1", "eth0")
    assert elements(ns) == {"2001:db8:1:2::9": "net/c2/eth0"}


def test_listing_reloads_with_nft_f(ns):
    """Our names and comments stay valid nft syntax: a saved ruleset restores."""
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "add_masquerade", "net", "y" * 150, "eth0", ["10.88.0.6/16"])  # hashed key
    saved = sh("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout
    before = table(ns)
    sh("ip", "netns", "exec", ns, "nft", "flush", "ruleset")
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=saved)
    assert table(ns) == before


# --- DEL, CHECK, GC -----------------------------------------------------------------------------


def test_del_removes_only_that_attachment(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "add_masquerade", "net", "c1", "eth1", ["10.88.0.6/16"])
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.7/16"])
    call(ns, "add_masquerade", "other", "c1", "eth0", ["10.90.0.5/16"])
    call(ns, "remove_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    assert elements(ns) == {"10.88.0.6": "net/c1/eth1", "10.88.0.7": "net/c2/eth0", "10.90.0.5": "other/c1/eth0"}
    t = table(ns)
    # DEL twice is success and changes nothing; so is DEL without the addresses.
    call(ns, "remove_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "remove_masquerade", "net", "c1", "eth0")
    assert table(ns) == t


def test_del_without_addresses_finds_the_elements_by_owner(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.7/16"])
    call(ns, "remove_masquerade", "net", "c1", "eth0")
    assert elements(ns) == {"10.88.0.7": "net/c2/eth0"}


def test_del_gc_and_check_without_table(ns):
    assert call(ns, "remove_masquerade", "net", "c1", "eth0") is None
    assert call(ns, "remove_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"]) is None
    assert call(ns, "gc_masquerade", "net", []) == []
    with pytest.raises(CallFailed, match="missing"):
        call(ns, "check_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    assert table(ns) is None  # none of them created anything


def test_del_with_table_but_foreign_element_without_comment(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    sh("ip", "netns", "exec", ns, "nft", "add", "element", "inet", "cni_bridge", "pods4", "{ 10.88.0.99 }")
    call(ns, "remove_masquerade", "net", "c1", "eth0")
    assert table(ns)["sets"]["pods4"] == {'"10.88.0.99"': None}


def test_del_by_address_leaves_a_new_owner_alone(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.5/16"])  # the address went to c2
    call(ns, "remove_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    assert elements(ns) == {"10.88.0.5": "net/c2/eth0"}


def test_after_the_last_del_nothing_names_an_address_or_subnet(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "add_masquerade", "net2", "c2", "eth0", ["10.89.0.6/24"])
    call(ns, "remove_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "remove_masquerade", "net2", "c2", "eth0", ["10.89.0.6/24"])
    t = table(ns)
    assert set(t["chains"]) == {"pod-masq"} and t["rules"]["pod-masq"] == MASQUERADE_RULES
    assert all(members == {} for members in t["sets"].values())
    listing = sh("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "cni_bridge").stdout
    assert "10.88" not in listing and "10.89" not in listing and "fd00" not in listing


def test_check_sees_what_would_not_be_masqueraded(ns):
    addrs = ["10.88.0.5/16", "fd00::5/64"]
    call(ns, "add_masquerade", "net", "c1", "eth0", addrs)
    assert call(ns, "check_masquerade", "net", "c1", "eth0", addrs) is None
    with pytest.raises(CallFailed, match="net/c3/eth0"):  # names the attachment
        call(ns, "check_masquerade", "net", "c3", "eth0", ["10.88.0.7/16"])
    sh("ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "cni_bridge", "pod-masq")
    with pytest.raises(CallFailed, match="chain pod-masq is empty"):
        call(ns, "check_masquerade", "net", "c1", "eth0", addrs)
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.6/16"])  # the next ADD heals it
    assert call(ns, "check_masquerade", "net", "c1", "eth0", addrs) is None
    handle = next(r["rule"]["handle"] for r in json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "-a", "list",
                                                              "chain", "inet", "cni_bridge", "pod-masq").stdout)[
        "nftables"] if "rule" in r and "pods6" in json.dumps(r["rule"]["expr"]))
    sh("ip", "netns", "exec", ns, "nft", "delete", "rule", "inet", "cni_bridge", "pod-masq", "handle", str(handle))
    with pytest.raises(CallFailed, match="chain pod-masq holds rules"):
        call(ns, "check_masquerade", "net", "c1", "eth0", addrs)
    call(ns, "add_masquerade", "net", "c4", "eth0", ["10.88.0.8/16"])
    sh("ip", "netns", "exec", ns, "nft", "delete", "element", "inet", "cni_bridge", "pods6", "{ fd00::5 }")
    with pytest.raises(CallFailed, match="pods6 is missing"):
        call(ns, "check_masquerade", "net", "c1", "eth0", addrs)


def test_a_flushed_chain_is_healed_by_the_next_add_in_place(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    before = table(ns)
    sh("ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "cni_bridge", "pod-masq")
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.6/16"])
    after = table(ns)
    assert after["rules"] == before["rules"] and after["comments"] == before["comments"]
    assert set(elements(ns)) == {"10.88.0.5", "10.88.0.6"}  # the elements survived the flush


def test_healing_add_whose_element_a_concurrent_heal_restored_meanwhile(ns):
    """Two ADDs heal a flushed chain at once; each restores the leased attachments, the
    other's included. One restored between our lookup and our batch once made our
    exclusive create fail with EEXIST (the ADD failed); now the batch is made again."""
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    before = table(ns)
    sh("ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "cni_bridge", "pod-masq")
    call(ns, "add_masquerade_restored_meanwhile", "net", "c2", "eth0", ["10.88.0.6/16"])
    assert table(ns)["rules"] == before["rules"]
    assert elements(ns) == {"10.88.0.5": "net/c1/eth0", "10.88.0.6": "net/c2/eth0"}


def test_a_foreign_rule_in_our_chain_is_replaced(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    before = table(ns)
    sh("ip", "netns", "exec", ns, "nft", "insert", "rule", "inet", "cni_bridge", "pod-masq", "accept")
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.6/16"])
    assert table(ns)["rules"] == before["rules"]


def test_a_deleted_table_is_rebuilt_by_the_next_add(ns):
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "cni_bridge")
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.6/16"])
    assert table(ns)["rules"]["pod-masq"] == MASQUERADE_RULES
    # The bridge plugin gives back the others' elements from its leases (tests/privileged/bridge).
    assert elements(ns) == {"10.88.0.6": "net/c2/eth0"}


def test_gc_with_partial_valid_list(ns):
    long_id = "x" * 150  # hashed key
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    call(ns, "add_masquerade", "net", "c2", "eth0", ["10.88.0.6/16"])
    call(ns, "add_masquerade", "net", "c3", "eth0", ["10.88.0.7/16"])
    call(ns, "add_masquerade", "net", long_id, "eth0", ["10.88.0.8/16"])
    call(ns, "add_masquerade", "net", "gone-long" + long_id, "eth0", ["10.88.0.9/16"])
    call(ns, "add_masquerade", "other", "c2", "eth0", ["10.90.0.6/16"])

    removed = call(ns, "gc_masquerade", "net", [["c1", "eth0"], ["c3", "eth1"], [long_id, "eth0"]])
    gone_long = nft_table.attachment_key("net", "gone-long" + long_id, "eth0")
    assert removed == sorted(["net/c2/eth0"] * 2 + ["net/c3/eth0"] * 2 + [gone_long] * 2)  # two elements each
    assert set(elements(ns)) == {"10.88.0.5", "fd00::5", "10.88.0.8", "10.90.0.6"}
    # A second GC with the same list finds nothing more.
    assert call(ns, "gc_masquerade", "net", [["c1", "eth0"], ["c3", "eth1"], [long_id, "eth0"]]) == []


LEGACY_LAYOUT = """
table inet cni_bridge {
    map masq4 { type ipv4_addr : verdict; }
    map masq6 { type ipv6_addr : verdict; }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr vmap @masq4
        ip6 saddr vmap @masq6
    }
    chain masq-10.88.0.0_16 {
        ip daddr != 10.88.0.0/16 ip daddr != 224.0.0.0/4 masquerade
    }
}
add element inet cni_bridge masq4 { 10.88.0.5 comment "net/old1/eth0" : jump masq-10.88.0.0_16 }
add element inet cni_bridge masq4 { 10.88.0.6 comment "net/old2/eth0" : jump masq-10.88.0.0_16 }
"""


def test_attachments_of_the_legacy_layout_are_removed_and_it_goes_as_it_empties(ns):
    """A node upgraded with pods running: their masquerade stays in the legacy layout
    (which the new one leaves alone), their DEL and GC remove it, the last one takes it."""
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=LEGACY_LAYOUT)
    call(ns, "add_masquerade", "net", "new", "eth0", ["10.88.0.7/16"])
    t = table(ns)
    assert {"postrouting", "masq-10.88.0.0_16", "pod-masq"} <= set(t["chains"])
    assert len(t["sets"]["masq4"]) == 2  # the old pods keep their NAT
    call(ns, "remove_masquerade", "net", "old1", "eth0", ["10.88.0.5/16"])
    assert set(table(ns)["sets"]["masq4"]) == {'"10.88.0.6"'}
    assert call(ns, "gc_masquerade", "net", [["new", "eth0"]]) == ["net/old2/eth0"]
    t = table(ns)
    assert set(t["chains"]) == {"pod-masq"} and "masq4" not in t["sets"] and "masq6" not in t["sets"]
    assert elements(ns) == {"10.88.0.7": "net/new/eth0"}


def test_concurrent_adds_and_dels(ns):
    """Many processes at once: every element lands, the rules are never duplicated."""
    def spawn(name, *args):
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", RUNNER, name,
                                 json.dumps(list(args))], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    procs = [spawn("add_masquerade", "net", f"c{i}", "eth0", [f"10.{88 + i % 3}.0.{i + 2}/16"])
             for i in range(12)]
    for p in procs:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
    assert len(elements(ns)) == 12
    assert table(ns)["rules"]["pod-masq"] == MASQUERADE_RULES
    procs = [spawn("remove_masquerade", "net", f"c{i}", "eth0", [f"10.{88 + i % 3}.0.{i + 2}/16"]) for i in range(12)]
    procs += [spawn("remove_masquerade", "net", f"c{i}", "eth0") for i in range(0, 12, 3)]  # DEL twice
    for p in procs:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
    assert elements(ns) == {}


def test_concurrent_first_adds_on_an_empty_node(ns):
    """ADDs that all find no table write the layout at once: one copy of the rules."""
    def spawn(i):
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", RUNNER, "add_masquerade",
                                 json.dumps(["net", f"c{i}", "eth0", [f"10.88.0.{i + 2}/16"]])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    procs = [spawn(i) for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
    assert table(ns)["rules"]["pod-masq"] == MASQUERADE_RULES
    assert len(elements(ns)) == 8


# --- STATUS and errors ---------------------------------------------------------------------------


def test_check_usable(ns):
    assert call(ns, "check_usable") is None  # no table yet
    call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16"])
    assert call(ns, "check_usable") is None


def test_check_usable_without_privileges(ns):
    with pytest.raises(CallFailed) as e:
        call(ns, "check_usable", user=65534)
    err = json.loads(e.value.args[0].splitlines()[0])
    assert err["code"] == 50 and err["msg"] == "nftables is not usable"  # STATUS's "not available"
    assert "Operation not permitted" in err["details"]


def test_bad_address_is_a_cni_error(ns):
    with pytest.raises(CallFailed) as e:
        call(ns, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5"])
    assert json.loads(e.value.args[0].splitlines()[0])["code"] == 7
    assert table(ns) is None


# --- traffic -----------------------------------------------------------------------------------

LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080)); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    host = peer[0].removeprefix("::ffff:")
    print(host, flush=True)
    c.sendall(b"ok"); c.close()
"""

CONNECT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 8080), timeout=5)
assert s.recv(2) == b"ok"
"""


@pytest.fixture
def topology(make_ns):
    """pod (10.88.0.5/16, fd00::5/64) -- host -- outside (192.0.2.2/24, 2001:db8:2::2/64).

    The outside has routes back to the pod subnets, so connections work either way and
    what it sees as the peer address shows whether the host masqueraded.
    """
    host, pod, out = make_ns("h"), make_ns("p"), make_ns("o")

    def ip(ns, *args):
        sh("ip", "-n", ns, *args)

    ip(host, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod)
    ip(host, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", out)
    for ns, dev, addrs in ((host, "vpod", ["10.88.0.1/16", "fd00::1/64"]),
                           (host, "vout", ["192.0.2.1/24", "2001:db8:2::1/64"]),
                           (pod, "eth0", ["10.88.0.5/16", "fd00::5/64"]),
                           (out, "eth0", ["192.0.2.2/24", "2001:db8:2::2/64"])):
        for addr in addrs:
            ip(ns, "addr", "add", addr, "dev", dev, "nodad")
        ip(ns, "link", "set", dev, "up")
    ip(pod, "route", "add", "default", "via", "10.88.0.1")
    ip(pod, "-6", "route", "add", "default", "via", "fd00::1")
    ip(out, "route", "add", "10.88.0.0/16", "via", "192.0.2.1")
    ip(out, "-6", "route", "add", "fd00::/64", "via", "2001:db8:2::1")
    sh("ip", "netns", "exec", host, "sysctl", "-qw",
       "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

    listener = subprocess.Popen(["ip", "netns", "exec", out, sys.executable, "-c", LISTENER],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _readline(listener) == "ready"
        yield host, pod, listener
    finally:
        listener.kill()  # the one process we started here, by its handle
        listener.wait(timeout=TIMEOUT)


def _readline(proc, timeout=10.0):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "listener said nothing"
    return proc.stdout.readline().strip()


def _seen_source(pod, listener, dest):
    """Connect from the pod to `dest`; return the source address the outside saw."""
    deadline = time.monotonic() + 10
    while True:  # the first packets may race the veths coming up
        res = sh("ip", "netns", "exec", pod, sys.executable, "-c", CONNECT, dest, check=False)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert res.returncode == 0, res.stderr
    return _readline(listener)


def test_traffic_is_masqueraded_only_while_added(topology):
    host, pod, listener = topology
    assert _seen_source(pod, listener, "192.0.2.2") == "10.88.0.5"
    assert _seen_source(pod, listener, "2001:db8:2::2") == "fd00::5"

    call(host, "add_masquerade", "net", "c1", "eth0", ["10.88.0.5/16", "fd00::5/64"])
    assert _seen_source(pod, listener, "192.0.2.2") == "192.0.2.1"
    assert _seen_source(pod, listener, "2001:db8:2::2") == "2001:db8:2::1"
    conntrack = sh("ip", "netns", "exec", host, "conntrack", "-L", "-p", "tcp", "--dport", "8080",
                   check=False)
    assert "src=10.88.0.5 dst=192.0.2.2" in conntrack.stdout and "dst=192.0.2.1" in conntrack.stdout

    call(host, "remove_masquerade", "net", "c1", "eth0")
    assert _seen_source(pod, listener, "192.0.2.2") == "10.88.0.5"
    assert _seen_source(pod, listener, "2001:db8:2::2") == "fd00::5"
