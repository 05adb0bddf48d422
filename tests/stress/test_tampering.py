"""Our nftables layout tampered with as a firewall reload or an admin's cleanup would: CHECK
sees what no longer masquerades, the next ADDs (several at once) heal what their traffic
depends on, and real traffic to the outside is masqueraded again."""

import pytest

from stress_rig import NOTHING, OUTSIDE4, OUTSIDE6, assert_error_json, sh, size

pytestmark = pytest.mark.stress

NETWORK = "hxtamper"
HEALERS = max(size("WIDTH", 16) // 4, 2)
TAMPERING = {
    "chain flushed": ["flush", "chain", "inet", "cni_bridge", "pod-masq"],
    "chain deleted": ["delete", "chain", "inet", "cni_bridge", "pod-masq"],
    "table deleted": ["delete", "table", "inet", "cni_bridge"],
    "element deleted": ["delete", "element", "inet", "cni_bridge", "pods4", "{ ADDRESS }"],
}


def _masqueraded(node, netns: str) -> bool:
    """The outside answers only what is masqueraded: it has no route back to the containers."""
    return node.ping(netns, OUTSIDE4) and node.ping(netns, OUTSIDE6)


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_check_sees_tampering_and_the_next_adds_heal_it(node, figures, tampering):
    conf = node.conf(NETWORK, [["10.183.4.0/24"], ["fd1b:0:4::/64"]])
    node.outside()
    a, b, *healers = node.containers(2 + HEALERS, "m")
    checks = {}
    for ns, container_id in ((a, "tamper-a"), (b, "tamper-b")):
        added = node.run("ADD", conf, ns, container_id)
        assert added.code == 0, added
        checks[container_id] = (ns, {**conf, "prevResult": added.out})
    for container_id, (ns, prev) in checks.items():
        assert node.run("CHECK", prev, ns, container_id).code == 0
        assert _masqueraded(node, ns), container_id
    intact = node.chains()

    address_of_a = checks["tamper-a"][1]["prevResult"]["ips"][0]["address"].split("/")[0]
    command = [word.replace("ADDRESS", address_of_a) for word in TAMPERING[tampering]]
    sh("ip", "netns", "exec", node.name, "nft", *command)

    failed = assert_error_json(node.run("CHECK", checks["tamper-a"][1], a, "tamper-a"))
    assert f"{NETWORK}/tamper-a/eth0" in failed["msg"], failed
    assert not node.ping(a, OUTSIDE4, tries=1), "tampered, yet still masqueraded: the test shows nothing"

    added = node.run_all([("ADD", conf, ns, f"healer{i}") for i, ns in enumerate(healers)])
    assert all(outcome.code == 0 for outcome in added), [outcome for outcome in added if outcome.code != 0]
    assert node.chains() == intact, "each rule once, as before, although several ADDs healed at once"
    for i, (ns, outcome) in enumerate(zip(healers, added)):
        assert node.run("CHECK", {**conf, "prevResult": outcome.out}, ns, f"healer{i}").code == 0
        assert _masqueraded(node, ns)

    if tampering == "element deleted":
        # Nobody else's ADD puts back an element of an intact layout; the runtime's answer
        # to a failed CHECK (DEL, then ADD) does.
        assert_error_json(node.run("CHECK", checks["tamper-a"][1], a, "tamper-a"))
        assert node.run("DEL", checks["tamper-a"][1], a, "tamper-a").code == 0
        readded = node.run("ADD", conf, a, "tamper-a")
        assert readded.code == 0, readded
        checks["tamper-a"] = (a, {**conf, "prevResult": readded.out})
    for container_id, (ns, prev) in checks.items():
        checked = node.run("CHECK", prev, ns, container_id)
        assert checked.code == 0, (container_id, checked)
        assert _masqueraded(node, ns), container_id

    deletions = [("DEL", prev, ns, cid) for cid, (ns, prev) in checks.items()]
    deletions += [("DEL", conf, ns, f"healer{i}") for i, ns in enumerate(healers)]
    assert all(outcome.code == 0 for outcome in node.run_all(deletions))
    assert node.leftovers(NETWORK) == NOTHING
    figures.append(f"tampering ({tampering}): CHECK named it; after {HEALERS} ADDs at once, all traffic masqueraded again")
