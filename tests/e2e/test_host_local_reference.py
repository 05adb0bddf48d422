"""Side by side with the reference host-local (containernetworking-plugins, Debian's
/usr/lib/cni/host-local): a node can switch between the two in either direction.

Needs the reference binary, not root: nothing here touches the kernel.
The reference speaks CNI up to 1.0.0, so the configs here say 1.0.0.
"""

import pytest

from plugin_runner import exec_plugin, finish_plugin, host_local_conf, lease_files, start_plugin

pytestmark = pytest.mark.e2e


@pytest.fixture
def plugins(plugin_dir, reference_host_local):
    return {"ours": plugin_dir / "host-local", "theirs": reference_host_local}


def add(executable, conf, container_id, ifname="eth0") -> list[str]:
    result = exec_plugin(executable, "ADD", conf, container_id=container_id, ifname=ifname)
    assert result.code == 0, result
    return [ip["address"] for ip in result.out["ips"]]


def delete(executable, conf, container_id, ifname="eth0") -> None:
    result = exec_plugin(executable, "DEL", conf, container_id=container_id, ifname=ifname)
    assert (result.code, result.raw) == (0, b""), result


def on_disk(net_dir) -> dict[str, str]:
    """Every file but the lock, with its content: leases and round-robin hints."""
    return {p.name: p.read_bytes().decode() for p in net_dir.iterdir() if p.name != "lock"}


@pytest.mark.parametrize("first, second", [("theirs", "ours"), ("ours", "theirs")])
def test_leases_are_honoured_both_ways(plugins, make_conf, data_dir, first, second):
    conf = make_conf([["10.0.0.0/24"], ["fd00::/64"]], cni_version="1.0.0")
    net_dir = data_dir / "testnet"
    assert add(plugins[first], conf, "c1") == ["10.0.0.2/24", "fd00::2/64"]
    assert add(plugins[second], conf, "c2") == ["10.0.0.3/24", "fd00::3/64"], "the next address, not a double"
    assert exec_plugin(plugins[second], "CHECK", conf, container_id="c1").code == 0
    dup = exec_plugin(plugins[second], "ADD", conf, container_id="c1")
    assert dup.code == 1 and "duplicate allocation is not allowed" in dup.out["msg"]
    assert lease_files(net_dir) == {
        "10.0.0.2": "c1\r\neth0", "fd00::2": "c1\r\neth0", "10.0.0.3": "c2\r\neth0", "fd00::3": "c2\r\neth0",
    }
    delete(plugins[second], conf, "c1")
    delete(plugins[first], conf, "c2")
    assert lease_files(net_dir) == {}
    assert exec_plugin(plugins[first], "CHECK", conf, container_id="c1").code == 1


def test_round_robin_continues_across_plugins(plugins, make_conf):
    conf = make_conf([["10.0.0.0/29"]], cni_version="1.0.0")
    sequence = ["theirs", "ours", "ours", "theirs"]
    assert [add(plugins[p], conf, f"c{i}")[0] for i, p in enumerate(sequence)] == [
        "10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29",
    ]
    delete(plugins["ours"], conf, "c0")
    assert add(plugins["theirs"], conf, "c4") == ["10.0.0.6/29"]
    assert add(plugins["ours"], conf, "c5") == ["10.0.0.2/29"], "wrapped past the gateway to the freed .2"


def test_old_id_only_lease_is_released_by_both(plugins, make_conf, data_dir):
    conf = make_conf(cni_version="1.0.0")
    net_dir = data_dir / "testnet"
    for name, executable in plugins.items():
        net_dir.mkdir(parents=True, exist_ok=True)
        (net_dir / "10.0.0.9").write_text("old")
        delete(executable, conf, "old")
        assert lease_files(net_dir) == {}, name


V4_SET = [
    {"subnet": "10.0.0.0/29", "rangeStart": "10.0.0.2", "gateway": "10.0.0.4"},
    {"subnet": "10.0.1.0/30"},
]  # 5 addresses
RANGE_SETS = {
    "v4 runs out": [V4_SET, [{"subnet": "fd00::/125"}]],
    "v6 runs out": [V4_SET, [{"subnet": "fd00::/125", "rangeStart": "fd00::4"}]],  # 4 addresses
}
# An ADD/DEL script that crosses ranges, skips gateways, wraps and runs out (in range set 1,
# the lease range set 0 gave is rolled back).
SCRIPT = (
    [("ADD", f"c{i}") for i in range(6)]
    + [("DEL", "c1"), ("DEL", "c3"), ("ADD", "c6"), ("ADD", "c7"), ("ADD", "c8")]
    + [("DEL", "c0"), ("DEL", "c6"), ("ADD", "c9"), ("ADD", "c10"), ("ADD", "c11")]
)


@pytest.mark.parametrize("ranges", RANGE_SETS.values(), ids=RANGE_SETS.keys())
def test_same_config_same_addresses_same_order(plugins, tmp_path, ranges):
    transcripts, trees = {}, {}
    for name, executable in plugins.items():
        conf = host_local_conf(tmp_path / name, ranges, cni_version="1.0.0")
        transcript = []
        for command, container_id in SCRIPT:
            result = exec_plugin(executable, command, conf, container_id=container_id)
            ips = [ip["address"] for ip in result.out["ips"]] if result.code == 0 and result.out else None
            transcript.append((command, container_id, result.code, ips))
        transcripts[name] = transcript
        trees[name] = on_disk(tmp_path / name / "testnet")
    assert transcripts["ours"] == transcripts["theirs"]
    assert trees["ours"] == trees["theirs"]
    outcomes = [code for _, _, code, _ in transcripts["ours"]]
    assert 1 in outcomes and outcomes.count(0) > 10, "the script must both allocate and run out"


def test_both_at_once_share_the_lock(plugins, make_conf, data_dir):
    conf = make_conf([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.39"}]], cni_version="1.0.0")
    runs = [(f"c{i:02d}", plugins["ours" if i % 2 else "theirs"]) for i in range(40)]
    procs = [start_plugin(executable, "ADD", conf, container_id=c) for c, executable in runs]
    results = [finish_plugin(p) for p in procs]
    won = [r.out["ips"][0]["address"] for r in results if r.code == 0]
    assert len(won) == len(set(won)) == 30
    assert sum(r.code != 0 for r in results) == 10
    assert len(lease_files(data_dir / "testnet")) == 30
