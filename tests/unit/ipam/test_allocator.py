"""Address allocation: round robin as the reference does it, requested addresses,
duplicates, exhaustion, and host-local's one-lease-per-range-set rule."""

import json

import pytest

from cni_bridge.cni import errors, skel
from cni_bridge.cni.errors import CNIError
from cni_bridge.cni.addr import format_ip, parse_ip
from ipam.allocator import allocate, candidates, free_address_exists
from ipam.config import load_ipam_config
from ipam.store import Store


def range_sets(make_conf, *sets):
    conf = make_conf([list(s) for s in sets])
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    return load_ipam_config(skel.load_cmd_args("ADD", env, json.dumps(conf).encode())).range_sets


R = {"subnet": "10.0.0.0/24"}


@pytest.fixture
def store(data_dir):
    with Store(str(data_dir), "net1", create=True) as store:
        yield store


def take(store, range_set, container_id="c1", ifname="eth0", requested=None, index=0) -> str:
    r, address = allocate(store, range_set, index, container_id, ifname, parse_ip(requested) if requested else None)
    assert r in range_set
    return format_ip(r.family, address)


def take_all(store, range_set, count, prefix="c") -> list[str]:
    return [take(store, range_set, f"{prefix}{i}") for i in range(count)]


@pytest.mark.parametrize(
    "ranges, last, order",
    [
        ([{"subnet": "10.0.0.0/29"}], None, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
        ([{"subnet": "10.0.0.0/29"}], "10.0.0.4", ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]),
        ([{"subnet": "10.0.0.0/29"}], "10.0.0.6", ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
        # a gateway inside the range is skipped wherever it is
        ([{**R, "rangeEnd": "10.0.0.4", "gateway": "10.0.0.3"}], None, ["10.0.0.1", "10.0.0.2", "10.0.0.4"]),
        ([{**R, "rangeEnd": "10.0.0.4", "gateway": "10.0.0.3"}], "10.0.0.2", ["10.0.0.4", "10.0.0.1", "10.0.0.2"]),
        # a hint outside the set (stale, another range set's) starts from the beginning
        ([{"subnet": "10.0.0.0/29"}], "10.9.0.4", ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
        ([{"subnet": "10.0.0.0/29"}], "fd00::4", ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
        # several ranges: through the rest of the hint's range, the others in order, then back
        (
            [{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/30"}, {"subnet": "10.0.2.0/30"}],
            "10.0.1.2",
            ["10.0.2.2", "10.0.0.2", "10.0.1.2"],
        ),
        (
            [{"subnet": "10.0.0.0/29", "rangeStart": "10.0.0.5"}, {"subnet": "10.0.1.0/29", "rangeEnd": "10.0.1.3"}],
            "10.0.0.5",
            ["10.0.0.6", "10.0.1.2", "10.0.1.3", "10.0.0.5"],
        ),
        ([{"subnet": "fd00::/125"}], "fd00::6", ["fd00::7", "fd00::2", "fd00::3", "fd00::4", "fd00::5", "fd00::6"]),
    ],
)
def test_candidate_order(make_conf, ranges, last, order):
    (range_set,) = range_sets(make_conf, ranges)
    got = [format_ip(r.family, a) for r, a in candidates(range_set, parse_ip(last) if last else None)]
    assert got == order


def test_round_robin_continues_from_last_reserved(make_conf, store):
    (range_set,) = range_sets(make_conf, ["10.0.0.0/29"])
    assert take_all(store, range_set, 3) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    store.release("10.0.0.2")
    assert take(store, range_set, "c9") == "10.0.0.5", "a freed address waits for the wrap"
    assert store.last_reserved(0) == "10.0.0.5"


def test_wraps_to_freed_addresses_then_exhausts(make_conf, store):
    (range_set,) = range_sets(make_conf, ["10.0.0.0/29"])
    assert take_all(store, range_set, 5) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    store.release("10.0.0.3")
    assert take(store, range_set, "c8") == "10.0.0.3"
    with pytest.raises(CNIError) as caught:
        take(store, range_set, "c9")
    assert caught.value.code == errors.INTERNAL
    assert caught.value.msg == "no IP addresses available in range set: 10.0.0.1-10.0.0.6"
    assert store.leases_of("c9", "eth0") == []


def test_multiple_ranges_in_a_set(make_conf, store):
    (range_set,) = range_sets(make_conf, ["10.0.0.0/30", {"subnet": "10.0.1.0/29", "rangeStart": "10.0.1.5"}])
    assert take_all(store, range_set, 3) == ["10.0.0.2", "10.0.1.5", "10.0.1.6"]
    with pytest.raises(CNIError) as caught:
        take(store, range_set, "c9")
    assert caught.value.msg.endswith("range set: 10.0.0.1-10.0.0.2,10.0.1.5-10.0.1.6")


def test_ipv6(make_conf, store):
    (range_set,) = range_sets(make_conf, ["fd00::/126"])
    assert take_all(store, range_set, 2) == ["fd00::2", "fd00::3"]
    assert not free_address_exists(store, range_set)
    with pytest.raises(CNIError, match=r"no IP addresses available in range set: fd00::1-fd00::3"):
        take(store, range_set, "c9")


def test_requested_address(make_conf, store):
    (range_set,) = range_sets(make_conf, ["10.0.0.0/24"])
    assert take(store, range_set, "c1", requested="10.0.0.77") == "10.0.0.77"
    assert store.last_reserved(0) == "10.0.0.77"
    assert take(store, range_set, "c2") == "10.0.0.78", "round robin goes on from a requested address"
    with pytest.raises(CNIError) as caught:
        take(store, range_set, "c3", requested="10.0.0.77")
    assert caught.value.msg == "requested IP address 10.0.0.77 is not available in range set 10.0.0.1-10.0.0.254"
    assert store.leases_of("c3", "eth0") == []


@pytest.mark.parametrize("requested", [None, "10.0.0.50"])
def test_duplicate_allocation_is_refused(make_conf, store, requested):
    (range_set,) = range_sets(make_conf, ["10.0.0.0/24"])
    assert take(store, range_set, "c1") == "10.0.0.2"
    with pytest.raises(CNIError) as caught:
        take(store, range_set, "c1", requested=requested)
    assert caught.value.code == errors.INTERNAL
    assert caught.value.msg == "10.0.0.2 has been allocated to c1, duplicate allocation is not allowed"
    assert [ip for ip, _, _ in store.leases()] == ["10.0.0.2"]
    assert take(store, range_set, "c1", ifname="eth1") == "10.0.0.3", "another interface of the container is fine"


def test_old_id_only_lease_counts_as_a_duplicate(make_conf, store, data_dir):
    (range_set,) = range_sets(make_conf, ["10.0.0.0/24"])
    (data_dir / "net1" / "10.0.0.9").write_text("c1")
    with pytest.raises(CNIError, match="10.0.0.9 has been allocated to c1"):
        take(store, range_set, "c1")


def test_same_container_in_two_range_sets(make_conf, store):
    v4, v6 = range_sets(make_conf, ["10.0.0.0/24"], ["fd00::/64"])
    assert take(store, v4, "c1", index=0) == "10.0.0.2"
    assert take(store, v6, "c1", index=1) == "fd00::2"
    assert store.last_reserved(0) == "10.0.0.2" and store.last_reserved(1) == "fd00::2"


def test_damaged_round_robin_hint_is_ignored(make_conf, store, data_dir):
    (range_set,) = range_sets(make_conf, ["10.0.0.0/24"])
    (data_dir / "net1" / "last_reserved_ip.0").write_text("garbage\n")
    assert take(store, range_set) == "10.0.0.2"


def test_free_address_exists(make_conf, store):
    (range_set,) = range_sets(make_conf, [{**R, "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.3"}])
    assert free_address_exists(store, range_set)
    take_all(store, range_set, 2)
    assert not free_address_exists(store, range_set), "the gateway .1 is not free"
    store.release("10.0.0.3")
    assert free_address_exists(store, range_set)


# ---- host-local ADD: one lease per range set or none ----------------------------------


def test_add_takes_nothing_when_one_range_set_is_full(host_local_in_process, make_conf, leases, data_dir):
    conf = make_conf([["10.0.0.0/24"], ["fd00::/126"]])
    for container in ("c1", "c2"):
        assert host_local_in_process("ADD", conf, container_id=container).code == 0
    result = host_local_in_process("ADD", conf, container_id="c3")
    assert result.code == 1 and result.out["code"] == errors.INTERNAL
    assert "fd00::1-fd00::3" in result.out["msg"]
    assert sorted(leases(data_dir / "testnet")) == ["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"]
