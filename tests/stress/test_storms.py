"""Concurrent ADD and DEL on one network: distinct addresses, working containers, and
nothing left once they are deleted; exhaustion under concurrency."""

import statistics
import time

import pytest

from stress_rig import NOTHING, NOTHING_OWNED, assert_error_json, size

pytestmark = pytest.mark.stress

WIDTH = size("WIDTH", 16)
ROUNDS = size("ROUNDS", 2)


def _addresses(outcome) -> list[str]:
    return [ip["address"].split("/")[0] for ip in outcome.out["ips"]]


def test_add_del_storms(node, figures):
    """Each round ADDs WIDTH containers while the previous round's WIDTH are DELeted, all at
    once; every new container must reach both gateways, every deleted one leave nothing."""
    network = "hxstorm"
    conf = node.conf(network, [["10.183.1.0/24"], ["fd1b:0:1::/64"]])
    batches = [node.containers(WIDTH, "s"), node.containers(WIDTH, "t")]
    previous: list[tuple[str, str]] = []
    durations = {"ADD": [], "DEL": []}
    started = time.monotonic()
    for round_number in range(ROUNDS):
        current = [(ns, f"storm{round_number}-{i}") for i, ns in enumerate(batches[round_number % 2])]
        calls = [("ADD", conf, ns, cid) for ns, cid in current] + [("DEL", conf, ns, cid) for ns, cid in previous]
        outcomes = node.run_all(calls)
        for call, outcome in zip(calls, outcomes):
            assert outcome.code == 0, (call[0], call[3], outcome)
            durations[call[0]].append(outcome.seconds)
        added = outcomes[:len(current)]

        addresses = [address for outcome in added for address in _addresses(outcome)]
        assert len(addresses) == 2 * WIDTH and len(set(addresses)) == len(addresses), sorted(addresses)
        for (ns, cid), outcome in zip(current, added):
            assert node.ping(ns, "10.183.1.1") and node.ping(ns, "fd1b:0:1::1"), (cid, outcome.out)
        for ns, cid in previous:
            assert node.owned_by(network, cid) == NOTHING_OWNED, cid
        left = node.leftovers(network)
        assert len(left["veths"]) == WIDTH and sorted(left["leases"]) == sorted(addresses), left
        assert node.masqueraded() == {address: f"{network}/{cid}/eth0" for (_, cid), outcome in zip(current, added)
                                      for address in _addresses(outcome)}
        previous = current

    outcomes = node.run_all([("DEL", conf, ns, cid) for ns, cid in previous])
    assert all(outcome.code == 0 for outcome in outcomes), outcomes
    assert node.leftovers(network) == NOTHING
    figures.append(f"storm: {ROUNDS} rounds of {WIDTH} ADDs with {WIDTH} DELs at once, {time.monotonic() - started:.1f} s;"
                   f" median ADD {statistics.median(durations['ADD']):.2f} s, DEL {statistics.median(durations['DEL']):.2f} s")


def test_exhaustion_under_concurrency(node, figures):
    """A range of N addresses and N+k ADDs at once: exactly N succeed; the others fail with
    error JSON and leave nothing."""
    network = "hxfull"
    capacity, extra = max(WIDTH // 2, 4), max(WIDTH // 4, 2)
    last = 10 + capacity - 1
    conf = node.conf(network, [[{"subnet": "10.183.2.0/24", "rangeStart": "10.183.2.10",
                                 "rangeEnd": f"10.183.2.{last}"}]])
    containers = node.containers(capacity + extra, "x")
    calls = [("ADD", conf, ns, f"full{i}") for i, ns in enumerate(containers)]
    outcomes = node.run_all(calls)

    won = [(call, outcome) for call, outcome in zip(calls, outcomes) if outcome.code == 0]
    lost = [(call, outcome) for call, outcome in zip(calls, outcomes) if outcome.code != 0]
    assert len(won) == capacity, [o for _, o in lost]
    assert sorted(a for _, o in won for a in _addresses(o)) == sorted(f"10.183.2.{n}" for n in range(10, last + 1))
    for (_, _, ns, cid), outcome in lost:
        error = assert_error_json(outcome)
        assert error["msg"] == f"no IP addresses available in range set: 10.183.2.10-10.183.2.{last}", error
        assert node.owned_by(network, cid) == NOTHING_OWNED, cid
        assert node.namespace_links(ns) == ["lo"], cid
    assert len(node.veths()) == capacity

    outcomes = node.run_all([("DEL", conf, ns, cid) for (_, _, ns, cid) in [c for c, _ in won + lost]])
    assert all(outcome.code == 0 for outcome in outcomes), outcomes
    assert node.leftovers(network) == NOTHING
    figures.append(f"exhaustion: {capacity + extra} ADDs at once for {capacity} addresses: {len(won)} won,"
                   f" {len(lost)} got error JSON")
