"""SIGKILL at random points of ADD and of DEL, then the runtime's DEL: nothing is left, and
an attachment that was there all along keeps its lease, masquerade and traffic."""

import statistics
import time

import pytest

from stress_rig import NOTHING, NOTHING_OWNED, OUTSIDE4, random_source, size

pytestmark = pytest.mark.stress

KILLS = size("KILLS", 12)
NETWORK = "hxkill"


@pytest.fixture
def killing(node):
    """(conf, container pool, bystander's prevResult conf, outside, how long a whole ADD and
    a whole DEL take here)."""
    conf = node.conf(NETWORK, [["10.183.3.0/24"], ["fd1b:0:3::/64"]])
    outside = node.outside()
    bystander, *pool = node.containers(5, "k")
    added = node.run("ADD", conf, bystander, "bystander")
    assert added.code == 0, added
    seconds = {"ADD": [], "DEL": []}
    for ns in pool[:3]:
        for command in ("ADD", "DEL"):
            timed = node.run(command, conf, ns, "timing")
            assert timed.code == 0, timed
            seconds[command].append(timed.seconds)
    durations = {command: statistics.median(values) for command, values in seconds.items()}
    return conf, pool, {**conf, "prevResult": added.out}, outside, durations


def _assert_bystander_intact(node, conf, bystander_conf, outside):
    leased = node.owned_by(NETWORK, "bystander")["leases"]
    assert len(leased) == 2 and node.masqueraded() == {ip: f"{NETWORK}/bystander/eth0" for ip in leased}
    bystander_ns = bystander_conf["prevResult"]["interfaces"][2]["sandbox"].rsplit("/", 1)[1]
    checked = node.run("CHECK", bystander_conf, bystander_ns, "bystander")
    assert checked.code == 0, checked
    assert node.ping(bystander_ns, OUTSIDE4), "the bystander's traffic is no longer masqueraded"
    assert node.run("DEL", bystander_conf, bystander_ns, "bystander").code == 0
    assert node.leftovers(NETWORK) == NOTHING


@pytest.mark.parametrize("victim", ["ADD", "DEL"])
def test_sigkill_then_del_leaves_nothing(node, killing, stress_seed, figures, victim):
    conf, pool, bystander_conf, outside, durations = killing
    spread = durations[victim] * 1.2
    bystander_veth = bystander_conf["prevResult"]["interfaces"][1]["name"]
    rng = random_source(stress_seed, f"kill {victim}")
    landed = []
    for i in range(KILLS):
        ns, container_id = pool[i % len(pool)], f"kill{i}"
        prev = None
        if victim == "DEL":
            added = node.run("ADD", conf, ns, container_id)
            assert added.code == 0, added
            prev = {**conf, "prevResult": added.out}
        delay = rng.uniform(0, spread)
        proc = node.start(victim, prev or conf, ns, container_id)
        time.sleep(delay)
        outcome = node.kill(proc)
        if outcome.code == -9:
            landed.append(delay)
        # The runtime's DEL: with the cached result when ADD had given one.
        deleted = node.run("DEL", prev or conf, ns, container_id)
        assert deleted.code == 0, (i, delay, deleted)
        assert node.owned_by(NETWORK, container_id) == NOTHING_OWNED, (i, delay)
        assert node.namespace_links(ns) == ["lo"], (i, delay)
        assert node.veths() == [bystander_veth], (i, delay)
    _assert_bystander_intact(node, conf, bystander_conf, outside)
    figures.append(f"SIGKILL of {victim}: {KILLS} kills within 0-{spread:.3f} s, {len(landed)} landed"
                   f" before the exec ended (the rest had finished)")
