"""scripts/cluster end to end: two routed clusters side by side, their pods, `test`, `down`.

Cluster A has three nodes, cluster B two; each gets two pods on node 1 and one on node 2
with a hostPort (`-p HOST:8080`). Prefixes are `cl<random>`, cluster networks /20s of
10.184.0.0/16, underlays 10.184.2xx.0/24, host ports 18400-18499. What the script built,
and that nothing is left after `down`, is read with independent tools: `ip -j` (and `-d`
for the bridge ports) in each namespace, `nft -j`, `ip netns pids`, /proc, the state dir,
netcat between the clusters' own namespaces. The host's own routes, addresses and
nftables are compared before and after.

portmap: ours from build/bin when cni_bridge.suite.PLUGINS has it; until then the reference
one from /usr/lib/cni, given with `up --plugin-dir`.
"""

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from cni_bridge.suite import PLUGINS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster"
STATE_ROOT = Path("/run/cni-bridge-cluster")
REFERENCE_PORTMAP = Path("/usr/lib/cni/portmap")
MASQ_TABLE = "cni_bridge_cluster"
OURS = "10.184."  # every address of the test's clusters starts so
CHECKS = [
    "same-node pod to pod", "cross-node pod to pod (no SNAT)", "node to remote pod",
    "pod to outside (SNAT to its node)", "hostPort from another node", "hostPort from a pod on another node",
]


def sh(*cmd, check=True, input=None) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180, input=input)
    if check:
        assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    return res


def ip_json(netns: str, *args):
    out = sh("ip", "-n", netns, "-j", *args).stdout
    return json.loads(out) if out.strip() else []


def netns_names() -> set[str]:
    return {entry["name"] for entry in json.loads(sh("ip", "-j", "netns", "list").stdout or "[]")}


def host_routes() -> list[ipaddress.IPv4Network]:
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    return [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst", "default") != "default"]


def subnet_on_the_hosts_own_interface() -> ipaddress.IPv4Network | None:
    """A subnet routed on the device of the host's default route (others' test bridges come
    and go; that one stays while the test runs)."""
    routes = json.loads(sh("ip", "-j", "-4", "route", "show").stdout or "[]")
    devices = {r.get("dev") for r in routes if r["dst"] == "default"}
    subnets = [ipaddress.ip_network(r["dst"]) for r in routes if r.get("dev") in devices and r["dst"] != "default"]
    return next((net for net in subnets if net.prefixlen >= 16), None)


def alive(pid: int) -> bool:
    """True while the process runs (a zombie has finished)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Cluster:
    """One cluster of the script: its prefix, subnets, the script run with them, its state."""

    def __init__(self, nodes: int, cidr, underlay, host_port: int, plugin_args: list[str]):
        self.prefix = f"cl{secrets.token_hex(3)}"
        self.nodes, self.cidr, self.underlay, self.host_port = nodes, cidr, underlay, host_port
        self.plugin_args = plugin_args

    def run(self, command: str, *args, prefix=None) -> subprocess.CompletedProcess:
        return sh(SCRIPT, command, "--prefix", prefix or self.prefix, *args, check=False)

    def ok(self, command: str, *args) -> str:
        res = self.run(command, *args)
        assert res.returncode == 0, (command, args, res.stdout, res.stderr)
        return res.stdout

    def up(self) -> None:
        self.ok("up", "--nodes", self.nodes, "--cidr", self.cidr, "--underlay", self.underlay, *self.plugin_args)

    def netns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def state(self) -> dict:
        return json.loads((STATE_ROOT / self.prefix / "state.json").read_text())

    def pod_cidr(self, node: int):
        return list(self.cidr.subnets(new_prefix=24))[node]

    def node_address(self, node: int) -> str:
        return str(list(self.underlay.hosts())[node - 1])

    def pod_address(self, pod: str) -> str:
        """The pod's eth0 address, as the kernel has it."""
        (link,) = ip_json(self.netns(pod), "-4", "addr", "show", "dev", "eth0")
        return link["addr_info"][0]["local"]

    def test_rows(self) -> tuple[int, dict[str, list[str]]]:
        """`scripts/cluster test`: its exit code and {check: the rest of its row, split}."""
        res = self.run("test")
        rows = {}
        for line in res.stdout.splitlines()[1:-1]:
            what = next((c for c in CHECKS if line.startswith(c)), None)
            assert what, (line, res.stdout)
            rows[what] = line[len(what):].split()
        return res.returncode, rows

    def named_namespaces(self) -> list[str]:
        """The namespaces named like this cluster's that exist."""
        return sorted(n for n in netns_names() if n.startswith(self.prefix + "-"))


def free_subnets() -> tuple[list, list]:
    """/20 cluster networks and /24 underlays in 10.184.0.0/16 that no host route overlaps."""
    used = host_routes()
    cidrs = [net for net in ipaddress.ip_network("10.184.0.0/17").subnets(new_prefix=20)
             if not any(net.overlaps(u) for u in used)]
    underlays = [ipaddress.ip_network(f"10.184.{x}.0/24") for x in range(200, 250)]
    underlays = [net for net in underlays if not any(net.overlaps(u) for u in used)]
    if len(cidrs) < 3 or len(underlays) < 3:
        pytest.skip("10.184.0.0/16 is routed on this host")
    return random.sample(cidrs, 3), random.sample(underlays, 3)


def host_view() -> dict[str, set[str]]:
    """The host's own netns: its routes, addresses and nftables objects, each as JSON."""
    routes = [*json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]"),
              *json.loads(sh("ip", "-j", "-6", "route", "show", "table", "all").stdout or "[]")]
    addresses = json.loads(sh("ip", "-j", "addr", "show").stdout or "[]")
    nft = json.loads(sh("nft", "-j", "list", "ruleset").stdout or '{"nftables": []}')["nftables"]
    return {
        "routes": {json.dumps(r, sort_keys=True) for r in routes},
        "addresses": {json.dumps(a, sort_keys=True) for a in addresses},
        "nft": {json.dumps(item, sort_keys=True) for item in nft if "metainfo" not in item},
    }


def own_routes(view: dict[str, set[str]]) -> set[str]:
    """The routes on the devices of the host's default routes: the machine's own, which no test
    of anyone's makes or removes (other developers' bridges come and go meanwhile)."""
    routes = [json.loads(r) for r in view["routes"]]
    devices = {r.get("dev") for r in routes if r.get("dst") == "default"}
    return {json.dumps(r, sort_keys=True) for r in routes if r.get("dev") in devices}


@pytest.fixture(scope="module")
def plugin_args() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not (ROOT / "build" / "bin" / "cni-bridge").exists():
        pytest.skip("build/bin is missing: run scripts/build first")
    if "portmap" in PLUGINS:
        return []  # build/bin alone
    if not REFERENCE_PORTMAP.exists():
        pytest.skip("our portmap has not landed and the reference one is absent (containernetworking-plugins)")
    return ["--plugin-dir", str(REFERENCE_PORTMAP.parent)]


@pytest.fixture(scope="module")
def host_before(plugin_args):
    return host_view(), STATE_ROOT.exists()


@pytest.fixture(scope="module")
def clusters(plugin_args, host_before):
    """Clusters A (3 nodes) and B (2 nodes), each with pods web1, web2 on node 1 and web3 on node 2."""
    (cidr_a, cidr_b, spare), (underlay_a, underlay_b, spare_underlay) = free_subnets()
    a = Cluster(3, cidr_a, underlay_a, random.randrange(18400, 18450), plugin_args)
    b = Cluster(2, cidr_b, underlay_b, random.randrange(18450, 18500), plugin_args)
    a.spare_cidr, a.spare_underlay = spare, spare_underlay
    made = []
    try:
        for cluster in (a, b):
            made.append(cluster)
            cluster.up()
            cluster.ok("pod", "1", "web1")
            cluster.ok("pod", "1", "web2")
            cluster.ok("pod", "2", "web3", "-p", f"{cluster.host_port}:8080")
        yield a, b
    finally:
        for cluster in made:
            if (STATE_ROOT / cluster.prefix).exists():
                cluster.run("down")
            for name in cluster.named_namespaces():  # only when down failed: the test has failed then
                for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                    sh("kill", "-9", pid, check=False)
                sh("ip", "netns", "del", name, check=False)
            shutil.rmtree(STATE_ROOT / cluster.prefix, ignore_errors=True)


def test_up_builds_the_routed_topology(clusters):
    a, _ = clusters
    assert {a.netns(r) for r in ("underlay", "node1", "node2", "node3", "outside")} <= netns_names()
    ports = ip_json(a.netns("underlay"), "link", "show", "master", "ul0")
    assert sorted(p["ifname"] for p in ports) == ["node1", "node2", "node3", "outside"]
    assert ip_json(a.netns("underlay"), "-4", "addr", "show", "dev", "ul0") == []  # a switch, no router
    for k in (1, 2, 3):
        node = a.netns(f"node{k}")
        (eth0,) = ip_json(node, "-4", "addr", "show", "dev", "eth0")
        assert [(i["local"], i["prefixlen"]) for i in eth0["addr_info"]] == [(a.node_address(k), 24)]
        routes = {r["dst"]: r.get("gateway") for r in ip_json(node, "-4", "route", "show") if "gateway" in r}
        assert routes == {str(a.pod_cidr(m)): a.node_address(m) for m in (1, 2, 3) if m != k}  # host-gw's
        assert sh("ip", "netns", "exec", node, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
        masq = json.loads(sh("ip", "netns", "exec", node, "nft", "-j", "list", "table", "ip", MASQ_TABLE).stdout)
        (rule,) = [item["rule"] for item in masq["nftables"] if "rule" in item]
        matches = [e["match"] for e in rule["expr"] if "match" in e]
        prefix = {"prefix": {"addr": str(a.cidr.network_address), "len": a.cidr.prefixlen}}
        assert [(m["left"]["payload"]["field"], m["op"], m["right"]) for m in matches] == \
            [("saddr", "==", prefix), ("daddr", "!=", prefix)]
        assert {"masquerade": None} in rule["expr"]
        conflist = json.loads((STATE_ROOT / a.prefix / f"node{k}" / "net.d" / "10-cluster.conflist").read_text())
        bridge, portmap, loopback = conflist["plugins"]
        assert (bridge["type"], bridge["bridge"], bridge["isGateway"], bridge["hairpinMode"], bridge["ipMasq"]) == \
            ("bridge", "cni0", True, True, False)
        assert bridge["ipam"]["ranges"] == [[{"subnet": str(a.pod_cidr(k))}]]
        assert bridge["ipam"]["dataDir"] == str(STATE_ROOT / a.prefix / f"node{k}" / "ipam")  # its own
        assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}} and loopback["type"] == "loopback"
    # node 1's pods: on cni0 (the pod CIDR's gateway address), hairpin on, addresses from node 1's podCIDR
    (cni0,) = ip_json(a.netns("node1"), "-4", "addr", "show", "dev", "cni0")
    assert [(i["local"], i["prefixlen"]) for i in cni0["addr_info"]] == [(str(a.pod_cidr(1).network_address + 1), 24)]
    veths = ip_json(a.netns("node1"), "-d", "link", "show", "master", "cni0")
    assert len(veths) == 2 and all(v["linkinfo"]["info_slave_data"]["hairpin"] for v in veths)
    for pod, node in (("web1", 1), ("web2", 1), ("web3", 2)):
        assert ipaddress.ip_address(a.pod_address(pod)) in a.pod_cidr(node)
    for node, pods in ((1, {"web1", "web2"}), (2, {"web3"}), (3, set())):  # each node's leases in its own dataDir
        leases = STATE_ROOT / a.prefix / f"node{node}" / "ipam" / "cluster"
        found = {f.name for f in leases.iterdir() if f.name[0].isdigit()} if leases.exists() else set()
        assert found == {a.pod_address(pod) for pod in pods}


def test_test_passes_in_both_clusters(clusters):
    for cluster in clusters:
        code, rows = cluster.test_rows()
        assert code == 0, rows
        assert list(rows) == CHECKS
        assert all("pass" in row for row in rows.values()), rows
        web1, node1 = cluster.pod_address("web1"), cluster.node_address(1)
        assert rows["cross-node pod to pod (no SNAT)"][-3:] == ["web3", "saw", web1]
        assert rows["node to remote pod"][-3:] == ["web3", "saw", node1]
        assert rows["pod to outside (SNAT to its node)"][-3:] == ["outside", "saw", node1]
        assert f"{cluster.node_address(2)}:{cluster.host_port}" in rows["hostPort from a pod on another node"]


def nc_get(netns: str, address: str, port: int) -> dict[str, str]:
    """GET / with netcat inside netns: the server's answer as {name, peer}."""
    out = sh("ip", "netns", "exec", netns, "nc", "-N", "-w", "5", address, port,
             input="GET / HTTP/1.0\r\n\r\n").stdout
    body = out.partition("\n\n")[2]  # text mode has made \r\n of the headers \n
    return dict(item.split("=", 1) for item in body.split())


def test_traffic_seen_with_netcat(clusters):
    if shutil.which("nc") is None:
        pytest.skip("nc is absent (Debian package netcat-openbsd)")
    a, _ = clusters
    web1, web3 = a.pod_address("web1"), a.pod_address("web3")
    answer = nc_get(a.netns("web1"), web3, 8080)
    assert answer["name"] == "web3" and answer["peer"].split(":")[0] == web1  # the pod's own address, across nodes
    answer = nc_get(a.netns("web3"), a.state()["outside"]["address"], 8080)
    assert answer["name"] == "outside" and answer["peer"].split(":")[0] == a.node_address(2)  # SNATed by node 2
    answer = nc_get(a.netns("outside"), a.node_address(2), a.host_port)
    assert answer["name"] == "web3"  # the hostPort, from beyond the cluster


def test_test_fails_when_a_route_is_missing(clusters):
    a, _ = clusters
    node1, route = a.netns("node1"), str(a.pod_cidr(2))
    sh("ip", "-n", node1, "route", "del", route)
    try:
        code, rows = a.test_rows()
    finally:
        sh("ip", "-n", node1, "route", "add", route, "via", a.node_address(2), "dev", "eth0")
    assert code == 1
    assert "pass" in rows["same-node pod to pod"]
    assert "FAIL" in rows["cross-node pod to pod (no SNAT)"] and "FAIL" in rows["node to remote pod"]


def test_test_fails_when_pod_traffic_is_snated(clusters):
    """What the bridge's own ipMasq would do on a node (SNAT of traffic leaving the node's
    podCIDR) breaks the cluster's model: the receiver no longer sees the pod's address."""
    a, _ = clusters
    node1, table = a.netns("node1"), f"cltest{secrets.token_hex(2)}"
    rules = (f"table ip {table} {{\n chain postrouting {{\n type nat hook postrouting priority 99\n"
             f"ip saddr {a.pod_cidr(1)} ip daddr != {a.pod_cidr(1)} masquerade\n }}\n}}\n")
    sh("ip", "netns", "exec", node1, "nft", "-f", "-", input=rules)
    try:
        code, rows = a.test_rows()
    finally:
        sh("ip", "netns", "exec", node1, "nft", "delete", "table", "ip", table)
    assert code == 1
    row = rows["cross-node pod to pod (no SNAT)"]
    assert "FAIL" in row and row[-4:] == ["saw", a.node_address(1) + ",", "not", a.pod_address("web1")]


def test_refusals_leave_everything_as_it_was(clusters):
    a, _ = clusters
    namespaces = a.named_namespaces()
    res = a.run("up", "--cidr", a.spare_cidr, "--underlay", a.spare_underlay, *a.plugin_args)
    assert res.returncode == 1 and "is taken" in res.stderr
    res = a.run("pod", "7", "web9")
    assert res.returncode == 1 and "no node 7" in res.stderr
    assert a.named_namespaces() == namespaces  # none made, none removed

    route = subnet_on_the_hosts_own_interface()
    if route is not None:
        fresh = f"cl{secrets.token_hex(3)}"
        res = a.run("up", "--cidr", route.supernet(new_prefix=16), "--underlay", a.spare_underlay, *a.plugin_args,
                    prefix=fresh)
        assert res.returncode == 1 and "collides with the host's route" in res.stderr, res.stderr
        assert not (STATE_ROOT / fresh).exists() and not [n for n in netns_names() if n.startswith(fresh)]

    # a prefix that is not a cluster of the script's own, though a namespace is named like one
    foreign = f"cl{secrets.token_hex(3)}"
    sh("ip", "netns", "add", f"{foreign}-node1")
    try:
        res = a.run("down", prefix=foreign)
        assert res.returncode == 1 and "no cluster" in res.stderr and f"{foreign}-node1" in res.stderr
        assert f"{foreign}-node1" in netns_names()
        res = a.run("up", "--cidr", a.spare_cidr, "--underlay", a.spare_underlay, *a.plugin_args, prefix=foreign)
        assert res.returncode == 1 and "is taken" in res.stderr
        assert not (STATE_ROOT / foreign).exists()
    finally:
        sh("ip", "netns", "del", f"{foreign}-node1")


def test_down_removes_everything_and_nothing_else(clusters, host_before):
    view_before, state_root_existed = host_before
    a, b = clusters
    for cluster, other in ((a, b), (b, None)):
        state = cluster.state()
        namespaces = set(state["namespaces"])
        assert namespaces == {cluster.netns(r) for r in ("underlay", "outside", "web1", "web2", "web3")} | \
            {cluster.netns(f"node{k}") for k in range(1, cluster.nodes + 1)}
        pids = {int(pid) for name in namespaces for pid in sh("ip", "netns", "pids", name).stdout.split()}
        assert pids == {p["pid"] for p in state["processes"]} and len(pids) == 4  # the servers, and nothing else

        cluster.ok("down")
        assert not namespaces & netns_names()
        assert not (STATE_ROOT / cluster.prefix).exists()
        assert not [pid for pid in pids if alive(pid)]
        if other is not None:
            code, rows = other.test_rows()  # side by side: the other cluster does not notice
            assert code == 0, rows
    assert STATE_ROOT.exists() == state_root_existed

    view_after = host_view()
    for kind in view_after:
        new = [item for item in view_after[kind] - view_before[kind]
               if OURS in item or MASQ_TABLE in item or any(c.prefix in item for c in clusters)]
        assert new == [], kind
    assert own_routes(view_after) == own_routes(view_before)
