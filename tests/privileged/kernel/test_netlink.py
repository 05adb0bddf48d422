"""cni_bridge.kernel (rtnl, netns, sysctl) against the real kernel.

Each test runs with its thread inside a throwaway "host" netns (`host_netns`) and often a
throwaway "container" netns; results are checked with iproute2 (`ip -j`, `bridge -j`),
not with the module under test. VLAN filtering needs CONFIG_BRIDGE_VLAN_FILTERING; on a
kernel without it that test skips (tests/unit/kernel checks the messages byte for byte).
"""

import errno
import os
import socket
import subprocess

import pytest

from cni_bridge.kernel import netns, sysctl
from cni_bridge.cni.errors import INVALID_ENVIRONMENT, CNIError
from cni_bridge.kernel.netlink import NetlinkError
from cni_bridge.kernel.rtnl import RouteSocket

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("host_netns")]


def current_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


@pytest.fixture
def sock():
    """A RouteSocket in the (throwaway) host netns."""
    s = RouteSocket.host()
    yield s
    s.close()


@pytest.fixture
def csock(container_netns):
    s = RouteSocket.in_netns(container_netns.fd)
    yield s
    s.close()


@pytest.fixture
def vlan_filtering_supported(make_netns) -> None:
    ns = make_netns("probe")
    res = run("ip", "-n", ns.name, "link", "add", "br0", "type", "bridge", "vlan_filtering", "1",
              check=False)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"kernel has no bridge VLAN filtering: {res.stderr.strip()}")


def veth_pair(sock, container, host_name="vethnlt0", peer_name="eth0", **kw):
    """Create a veth pair; return (host Link, container-side ifindex)."""
    sock.create_veth(host_name, peer_name, container.fd, **kw)
    host = sock.get_link(host_name)
    return host, container.link(peer_name)["ifindex"]


# ---- bridges and links ----


def test_create_bridge_and_get(sock, host_netns):
    br = sock.create_bridge("cni0", mtu=1400)
    shown = host_netns.link("cni0")
    assert shown["linkinfo"]["info_kind"] == "bridge"
    assert (br.index, br.name, br.kind, br.mtu, br.mac) == (
        shown["ifindex"], "cni0", "bridge", 1400, shown["address"],
    )  # fmt: skip
    assert br.up is False and br.master is None and br.vlan_filtering is False
    assert sock.get_link(index=br.index) == br
    assert sock.get_link(name="cni0") == br
    assert br in sock.list_links()
    assert {link.name for link in sock.list_links()} == {
        link["ifname"] for link in host_netns.ip_json("link")
    }


def test_create_bridge_existing_name(sock, container_netns):
    sock.create_bridge("cni0")
    with pytest.raises(NetlinkError) as e:
        sock.create_bridge("cni0")
    assert e.value.errno == errno.EEXIST
    assert "cni0" in str(e.value)
    # Any link holding the name counts, not just a bridge.
    sock.create_veth("taken0", "eth0", container_netns.fd)
    with pytest.raises(NetlinkError) as e:
        sock.create_bridge("taken0")
    assert e.value.errno == errno.EEXIST


def test_get_link_missing(sock):
    assert sock.get_link("nosuchlink") is None
    assert sock.get_link(index=987654) is None
    with pytest.raises(ValueError):
        sock.get_link()


def test_veth_peer_created_in_container(sock, host_netns, container_netns):
    sock.create_veth("vethnlt0", "eth0", container_netns.fd, mtu=1400, peer_mac="0A:58:0A:01:00:05")
    host_side = host_netns.link("vethnlt0")
    peer = container_netns.link("eth0")
    assert host_side["linkinfo"]["info_kind"] == "veth" and host_side["mtu"] == 1400
    assert peer["linkinfo"]["info_kind"] == "veth" and peer["mtu"] == 1400
    assert peer["address"] == "0a:58:0a:01:00:05"
    # Each end lives only in its own namespace.
    assert host_netns.link("eth0") is None
    assert container_netns.link("vethnlt0") is None
    link = sock.get_link("vethnlt0")
    assert link.kind == "veth" and link.peer_index == peer["ifindex"]
    assert link.link_netnsid is not None
    with RouteSocket.in_netns(container_netns.fd) as c:
        eth0 = c.get_link("eth0")
    assert (eth0.mac, eth0.mtu, eth0.peer_index) == ("0a:58:0a:01:00:05", 1400, link.index)


def test_veth_peer_name_taken_in_container(sock, host_netns, container_netns):
    container_netns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other")
    with pytest.raises(NetlinkError) as e:
        sock.create_veth("vethnlt0", "eth0", container_netns.fd)
    assert e.value.errno == errno.EEXIST
    assert host_netns.link("vethnlt0") is None  # nothing half-made


def test_set_link(sock, host_netns, container_netns):
    br = sock.create_bridge("cni0")
    host, _ = veth_pair(sock, container_netns)
    sock.set_link(host.index, up=True, master=br.index, mtu=1300, promisc=True,
                  mac="02:00:00:00:00:aa")  # fmt: skip
    shown = host_netns.link("vethnlt0")
    assert shown["master"] == "cni0" and "UP" in shown["flags"] and "PROMISC" in shown["flags"]
    assert shown["mtu"] == 1300 and shown["address"] == "02:00:00:00:00:aa"
    link = sock.get_link(index=host.index)
    assert (link.up, link.master, link.mtu, link.promisc, link.mac) == (
        True, br.index, 1300, True, "02:00:00:00:00:aa",
    )  # fmt: skip
    assert link.slave_kind == "bridge"
    # Undo: down, no promisc, released from the bridge.
    sock.set_link(host.index, up=False, promisc=False, master=0)
    shown = host_netns.link("vethnlt0")
    assert "master" not in shown and "UP" not in shown["flags"] and "PROMISC" not in shown["flags"]
    link = sock.get_link(index=host.index)
    assert (link.up, link.master, link.promisc, link.slave_kind) == (False, None, False, None)
    sock.set_link(br.index, up=True)
    assert "UP" in host_netns.link("cni0")["flags"] and sock.get_link("cni0").up


def test_bridge_port_flags(sock, host_netns, container_netns):
    br = sock.create_bridge("cni0")
    host, _ = veth_pair(sock, container_netns)
    sock.set_link(host.index, master=br.index)

    def shown():
        (port,) = host_netns.bridge_json("-d", "link", "show", "dev", "vethnlt0")
        return port["hairpin"], port["isolated"], port["learning"]

    assert shown() == (False, False, True)
    sock.set_bridge_port(host.index, hairpin=True, isolated=True, learning=False)
    assert shown() == (True, True, False)
    link = sock.get_link(index=host.index)
    assert (link.hairpin, link.isolated, link.learning) == (True, True, False)
    sock.set_bridge_port(host.index, hairpin=False)  # the others stay as they were
    assert shown() == (False, True, False)
    # A link that is not a bridge port has no port flags to set.
    with pytest.raises(NetlinkError):
        sock.set_bridge_port(br.index, hairpin=True)


def test_delete_link(sock, host_netns, container_netns):
    host, _ = veth_pair(sock, container_netns)
    sock.delete_link(host.index)
    assert host_netns.link("vethnlt0") is None
    assert container_netns.link("eth0") is None  # the peer goes with it
    with pytest.raises(NetlinkError) as e:
        sock.delete_link(host.index)
    assert e.value.errno == errno.ENODEV


# ---- VLANs ----


def test_bridge_vlans_on_kernel(vlan_filtering_supported, sock, host_netns, container_netns):
    br = sock.create_bridge("cni0", vlan_filtering=True, default_pvid=1)
    assert br.vlan_filtering is True
    assert host_netns.link("cni0")["linkinfo"]["info_data"]["vlan_filtering"] == 1
    host, _ = veth_pair(sock, container_netns)
    sock.set_link(host.index, master=br.index)
    sock.bridge_vlan_del(host.index, 1)  # the default PVID every new port gets
    sock.bridge_vlan_add(host.index, 10, pvid=True, untagged=True)
    sock.bridge_vlan_add(host.index, 100, vid_end=103)
    sock.bridge_vlan_add(br.index, 10, on_bridge_self=True)

    def shown(dev):
        entries = host_netns.bridge_json("vlan", "show", "dev", dev)
        vlans = entries[0]["vlans"] if entries else []
        out = []
        for v in vlans:
            for vid in range(v["vlan"], v.get("vlanEnd", v["vlan"]) + 1):
                flags = v.get("flags", [])
                out.append((vid, "PVID" in flags, "Egress Untagged" in flags))
        return sorted(out)

    assert shown("vethnlt0") == [(10, True, True), (100, False, False), (101, False, False),
                                 (102, False, False), (103, False, False)]  # fmt: skip
    ours = [(v["vid"], v["pvid"], v["untagged"]) for v in sock.bridge_vlans(host.index)]
    assert ours == shown("vethnlt0")
    assert (10, False, False) in shown("cni0")
    sock.bridge_vlan_del(host.index, 100, vid_end=103)
    assert shown("vethnlt0") == [(10, True, True)]


# ---- addresses ----


def addr_info(ns, dev: str) -> dict:
    """`ip -j addr show dev DEV` as {address: info}."""
    return {a["local"]: a for a in ns.ip_json("addr", "show", "dev", dev)[0]["addr_info"]}


def test_addresses(sock, host_netns, container_netns):
    host, _ = veth_pair(sock, container_netns)
    sock.set_link(host.index, up=True)
    with RouteSocket.in_netns(container_netns.fd) as c:
        eth0 = c.get_link("eth0")
        c.set_link(eth0.index, up=True)
        c.add_address(eth0.index, "10.1.0.5/24")
        c.add_address(eth0.index, "fd00::5/64", nodad=True)
        c.add_address(eth0.index, "fd00::6/64")
        with pytest.raises(NetlinkError) as e:
            c.add_address(eth0.index, "10.1.0.5/24")
        assert e.value.errno == errno.EEXIST

        shown = addr_info(container_netns, "eth0")
        assert shown["10.1.0.5"]["prefixlen"] == 24
        assert shown["10.1.0.5"]["broadcast"] == "10.1.0.255"
        assert "tentative" not in shown["fd00::5"]  # nodad: usable at once
        assert shown["fd00::6"].get("tentative") is True  # DAD runs for at least a second

        assert set(c.list_addresses(eth0.index)) >= {
            (eth0.index, "10.1.0.5/24"), (eth0.index, "fd00::5/64"), (eth0.index, "fd00::6/64"),
        }  # fmt: skip
        assert c.list_addresses(eth0.index, socket.AF_INET) == [(eth0.index, "10.1.0.5/24")]
        assert all(i == eth0.index for i, _ in c.list_addresses(family=socket.AF_INET6))
        info = {a.cidr: a for a in c.addresses(eth0.index, socket.AF_INET6)}
        assert not info["fd00::5/64"].tentative and info["fd00::6/64"].tentative

        c.add_address(eth0.index, "10.2.0.5/31")  # /31: no broadcast address
        assert "broadcast" not in addr_info(container_netns, "eth0")["10.2.0.5"]
        c.delete_address(eth0.index, "10.2.0.5/31")
        assert (eth0.index, "10.2.0.5/31") not in c.list_addresses(eth0.index)
    # The host side saw none of it.
    assert sock.list_addresses(host.index, socket.AF_INET) == []


def test_bad_address_strings(sock):
    for bad in ("10.1.0.5/33", "10.1.0/24", "fd00::g/64", "10.1.0.5/x"):
        with pytest.raises(ValueError):
            sock.add_address(1, bad)


# ---- routes ----


def test_routes(sock, container_netns):
    host, _ = veth_pair(sock, container_netns)
    sock.set_link(host.index, up=True)
    with RouteSocket.in_netns(container_netns.fd) as c:
        eth0 = c.get_link("eth0")
        c.set_link(eth0.index, up=True)
        c.add_address(eth0.index, "10.1.0.5/24")
        c.add_address(eth0.index, "fd00::5/64", nodad=True)
        c.add_route("0.0.0.0/0", gateway="10.1.0.1", index=eth0.index, priority=100,
                    mtu=1300, advmss=1200)  # fmt: skip
        c.add_route("10.9.0.0/16", gateway="10.1.0.1", index=eth0.index, table=1000)
        c.add_route("::/0", gateway="fd00::1", index=eth0.index)
        c.add_route("10.7.0.0/16", index=eth0.index)  # no gateway: on-link
        with pytest.raises(NetlinkError) as e:
            c.add_route("0.0.0.0/0", gateway="10.1.0.1", index=eth0.index, priority=100)
        assert e.value.errno == errno.EEXIST
        with pytest.raises(NetlinkError) as e:  # gateway not on any connected subnet
            c.add_route("10.8.0.0/16", gateway="192.0.2.1", index=eth0.index)
        assert e.value.errno == errno.ENETUNREACH

        routes = container_netns.ip_json("-4", "route", "show", "table", "all")
        shown = {(r["dst"], r.get("table", "main")): r for r in routes}
        default = shown[("default", "main")]
        assert (default["gateway"], default["dev"], default["metric"]) == ("10.1.0.1", "eth0", 100)
        assert default["metrics"] == [{"mtu": 1300, "advmss": 1200}]
        assert shown[("10.9.0.0/16", "1000")]["gateway"] == "10.1.0.1"
        assert shown[("10.7.0.0/16", "main")]["dev"] == "eth0"
        (v6default,) = [r for r in container_netns.ip_json("-6", "route") if r["dst"] == "default"]
        assert v6default["gateway"] == "fd00::1" and v6default["dev"] == "eth0"

        ours = {(r["dst"], r["table"]): r for r in c.list_routes(socket.AF_INET)}
        d = ours[("0.0.0.0/0", 254)]
        assert (d["gw"], d["oif"], d["priority"], d["mtu"], d["advmss"]) == (
            "10.1.0.1", eth0.index, 100, 1300, 1200,
        )  # fmt: skip
        assert ours[("10.9.0.0/16", 1000)]["gw"] == "10.1.0.1"
        assert [r["dst"] for r in c.list_routes(socket.AF_INET, table=1000)] == ["10.9.0.0/16"]
        assert all(r["oif"] == eth0.index for r in c.list_routes(socket.AF_INET, index=eth0.index))
        v6 = {r["dst"]: r for r in c.list_routes(socket.AF_INET6, index=eth0.index, table=254)}
        assert v6["::/0"]["gw"] == "fd00::1" and "fd00::/64" in v6

        c.delete_route("10.9.0.0/16", table=1000)
        assert c.list_routes(socket.AF_INET, table=1000) == []
        with pytest.raises(NetlinkError) as e:
            c.delete_route("10.9.0.0/16", table=1000)
        assert e.value.errno == errno.ESRCH


# ---- namespaces ----


def test_open_netns_missing_path(tmp_path):
    path = str(tmp_path / "nope")
    with pytest.raises(netns.NetnsNotFound) as e:
        netns.open_netns(path)
    assert isinstance(e.value, CNIError) and e.value.code == INVALID_ENVIRONMENT
    assert path in e.value.msg and e.value.path == path


@pytest.mark.parametrize("path", ["/etc/hostname", "/proc/self/ns/mnt", "/tmp"])
def test_open_netns_not_a_netns(path):
    with pytest.raises(CNIError) as e:
        netns.open_netns(path)
    assert not isinstance(e.value, netns.NetnsNotFound)
    assert e.value.code == INVALID_ENVIRONMENT and "not a network namespace" in e.value.msg


def test_open_netns_accepts_bind_mount_and_proc(container_netns):
    fd = netns.open_netns(container_netns.path)
    try:
        assert os.fstat(fd).st_ino == container_netns.inode
    finally:
        os.close(fd)
    fd = netns.open_netns("/proc/thread-self/ns/net")  # the (throwaway) host's, via procfs
    try:
        assert os.fstat(fd).st_ino == current_netns_inode()
    finally:
        os.close(fd)


def test_entered_switches_and_restores(container_netns, host_netns):
    before = current_netns_inode()
    assert before == host_netns.inode
    with netns.entered(container_netns.fd):
        assert current_netns_inode() == container_netns.inode
    assert current_netns_inode() == before
    with pytest.raises(RuntimeError, match="boom"):
        with netns.entered(container_netns.fd):
            assert current_netns_inode() == container_netns.inode
            raise RuntimeError("boom")
    assert current_netns_inode() == before


def test_in_netns_socket_keeps_its_netns(container_netns, host_netns):
    container_netns.ip("link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    with RouteSocket.in_netns(container_netns.fd) as c:
        assert current_netns_inode() == host_netns.inode
        assert {"lo", "probe0", "probe1"} == {link.name for link in c.list_links()}
    with RouteSocket.host() as h:
        assert {"lo"} == {link.name for link in h.list_links()}


def test_sysctl_in_netns(container_netns, host_netns):
    host_before = host_netns.sysctl("net.ipv4.ip_forward")
    sysctl.write("net/ipv4/ip_forward", "1", container_netns.fd)
    assert container_netns.sysctl("net.ipv4.ip_forward") == "1"
    assert sysctl.read("net/ipv4/ip_forward", container_netns.fd) == "1"
    assert host_netns.sysctl("net.ipv4.ip_forward") == host_before
    sysctl.write("net/ipv4/ip_forward", "0", container_netns.fd)
    assert container_netns.sysctl("net.ipv4.ip_forward") == "0"
    assert current_netns_inode() == host_netns.inode
    with pytest.raises(FileNotFoundError):
        sysctl.write("net/ipv6/conf/nosuchif/accept_dad", "0", container_netns.fd)
    assert current_netns_inode() == host_netns.inode


def test_netlink_error_text(sock):
    with pytest.raises(NetlinkError) as e:
        sock.set_link(987654, up=True)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENODEV
    assert e.value.op == "set link 987654" and str(e.value).startswith("set link 987654: ")
