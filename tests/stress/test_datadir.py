"""A hostile dataDir: links planted where host-local keeps its files, a network directory
swapped for a link while ADDs run, directories others can write to, and `..` in every name
a runtime hands over. Nothing may be written outside the dataDir, and the files the links
point to must stay as they were."""

import ctypes
import os
import threading

import pytest

from stress_rig import assert_error_json, size

pytestmark = pytest.mark.stress

NETWORK = "hxdata"
WIDTH = size("WIDTH", 16)


@pytest.fixture
def sandbox(node, tmp_path):
    """(conf, container namespace, the network directory, a directory outside the dataDir
    holding a file that must never change)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("precious\n")
    conf = node.conf(NETWORK, [["10.183.5.0/24"]])
    (netns,) = node.containers(1, "d")
    return conf, netns, node.data_dir / NETWORK, outside


def _tree(directory) -> dict[str, bytes | str]:
    """Every path under a directory with a file's content or a link's target."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                found[path] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[path] = f.read()
    return found


@pytest.mark.parametrize("plugin", ["host-local", "bridge"])
@pytest.mark.parametrize("planted", ["last_reserved_ip.0", "lock", "network directory"])
def test_a_planted_link_is_never_followed(node, sandbox, plugin, planted):
    conf, netns, net_dir, outside = sandbox
    node.data_dir.mkdir(mode=0o755)
    if planted == "network directory":
        net_dir.symlink_to(outside)
        target = outside
    else:
        net_dir.mkdir(mode=0o755)
        target = outside / "precious" if planted != "lock" else outside / "created-through-the-link"
        (net_dir / planted).symlink_to(target)
    before = _tree(outside)

    error = assert_error_json(node.run("ADD", conf, netns, "victim", plugin=plugin))
    assert error["code"] == 5 and "symbolic link" in error["details"], error
    assert _tree(outside) == before
    assert node.leases(NETWORK) == {} if planted != "network directory" else True
    assert node.veths() == [] and node.nft_elements() == set()
    assert node.namespace_links(netns) == ["lo"]


def test_a_lease_that_is_a_link_is_neither_read_nor_its_target_removed(node, sandbox):
    conf, netns, net_dir, outside = sandbox
    node.data_dir.mkdir(mode=0o755)
    net_dir.mkdir(mode=0o755)
    (outside / "precious").write_bytes(b"victim\r\neth0")
    (net_dir / "10.183.5.9").symlink_to(outside / "precious")
    before = _tree(outside)
    for command, extra in (("DEL", {}), ("GC", {"cni.dev/valid-attachments": []})):
        outcome = node.run(command, {**conf, **extra}, netns, "victim", plugin="host-local")
        assert outcome.code == 0, outcome
    assert _tree(outside) == before
    added = node.run("ADD", conf, netns, "victim", plugin="host-local")
    assert added.code == 0 and added.out["ips"][0]["address"] == "10.183.5.2/24", added


def test_a_hard_link_as_round_robin_hint_is_not_written_through(node, sandbox):
    conf, netns, net_dir, outside = sandbox
    node.data_dir.mkdir(mode=0o755)
    net_dir.mkdir(mode=0o755)
    os.link(outside / "precious", net_dir / "last_reserved_ip.0")
    error = assert_error_json(node.run("ADD", conf, netns, "victim", plugin="host-local"))
    assert error["code"] == 5 and "hard links" in error["details"], error
    assert (outside / "precious").read_text() == "precious\n" and node.leases(NETWORK) == {}


@pytest.mark.parametrize("which", ["dataDir", "network directory"])
@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775])
def test_a_directory_others_can_write_to_is_refused(node, sandbox, which, mode):
    conf, netns, net_dir, _ = sandbox
    net_dir.mkdir(parents=True)
    unsafe = node.data_dir if which == "dataDir" else net_dir
    unsafe.chmod(mode)
    for command in ("ADD", "DEL"):
        error = assert_error_json(node.run(command, conf, netns, "victim", plugin="host-local"))
        assert (error["code"], error["msg"]) == (5, f"refusing the lease directory {unsafe}"), error
        assert f"mode {mode:04o}" in error["details"]
    assert os.listdir(net_dir) == []


@pytest.mark.parametrize("plugin", ["host-local", "bridge"])
@pytest.mark.parametrize("where, value, code", [
    ("name", "../hxescape", 7), ("name", "..", 7), ("name", "hx/../../escape", 7),
    ("container_id", "../../hxescape", 4), ("container_id", "..", 4),
    ("ifname", "../x", 4), ("ifname", "..", 4),
    ("args", "IP=../../hxescape", 7), ("args", "IgnoreUnknown=1;IP=10.183.5.7/../../x", 7),
])
def test_dot_dot_in_a_name_writes_nothing_anywhere(node, sandbox, tmp_path, plugin, where, value, code):
    conf, netns, _, _ = sandbox
    before = _tree(tmp_path)
    kw = {"container_id": "victim"}
    if where == "name":
        conf = {**conf, "name": value}
    else:
        kw[where] = value
    error = assert_error_json(node.run("ADD", conf, netns, plugin=plugin, **kw))
    assert error["code"] == code, error
    assert _tree(tmp_path) == before
    assert not os.path.exists("/var/lib/cni/networks/hxescape") and not os.path.exists("/var/lib/hxescape")


def _exchange(a, b) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE): there is always something at both."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def test_a_network_directory_swapped_for_a_link_during_adds(node, sandbox, figures):
    """An attacker keeps swapping the network directory with a link to another directory
    while WIDTH ADDs run at once: every ADD succeeds in the real directory or fails with
    error JSON, and nothing lands outside."""
    conf, netns, net_dir, outside = sandbox
    node.data_dir.mkdir(mode=0o755)
    net_dir.mkdir(mode=0o755)
    link = net_dir.with_name(NETWORK + ".link")
    link.symlink_to(outside)
    before = _tree(outside)
    stop = threading.Event()
    swaps = []

    def attack():
        while not stop.is_set() or len(swaps) % 2:
            _exchange(net_dir, link)
            swaps.append(1)

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        outcomes = node.run_all([("ADD", conf, netns, f"race{i}", "eth0", "host-local") for i in range(WIDTH)])
    finally:
        stop.set()
        attacker.join()
    assert net_dir.is_dir() and not net_dir.is_symlink()
    succeeded = [o for o in outcomes if o.code == 0]
    for outcome in outcomes:
        if outcome.code != 0:
            error = assert_error_json(outcome)
            assert (error["code"], error["msg"]) == (5, f"refusing the lease directory {net_dir}"), error
    assert _tree(outside) == before, "a lease was written through the link"
    leased = node.leases(NETWORK)
    assert sorted(leased) == sorted(o.out["ips"][0]["address"].split("/")[0] for o in succeeded)
    figures.append(f"dataDir race: {WIDTH} ADDs against {len(swaps)} swaps of the network directory with a link:"
                   f" {len(succeeded)} succeeded, {WIDTH - len(succeeded)} refused, nothing written outside")
