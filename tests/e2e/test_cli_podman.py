"""An attachment made by podman 4 (CNI backend) is listed by `cni-bridge ls` and removed by
`cni-bridge del`: the command reads and writes libcni's cache as podman's libcni does.

podman runs inside a node namespace (`nsenter --net=/run/netns/cli-node-*`), so its
bridge, veths and rules live there; its config and storage are private (runtime_support.
Podman). Its libcni caches results in the real /var/lib/cni/results, which the command
reads by default; the entries of this test's network (clipm<random>) are removed at the end.
"""

import json
import os
import secrets
import shutil
import subprocess
from ipaddress import ip_network
from pathlib import Path

import pytest

import runtime_support as rs
from runtime_support import host_netfilter_restored  # noqa: F401  (autouse: restores the host)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LIBCNI_CACHE = Path("/var/lib/cni/results")
CONTAINERS_CACHE = Path("/var/lib/containers")  # podman import writes a blob cache here
SUBNET = ip_network("10.180.20.0/24")
HOST_PORT = 18181


def sh(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180, **kw)
    if check:
        assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    return res


@pytest.fixture(scope="module")
def node_podman(tmp_path_factory):
    rs.require_podman()
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    if not (src / "cni-bridge").exists():
        pytest.skip(f"{src}/cni-bridge is missing: run scripts/build first")
    base = tmp_path_factory.mktemp("cli-podman")
    tag = secrets.token_hex(3)
    node = f"cli-node-{tag}"
    plugins = base / "bin"
    shutil.copytree(src, plugins, symlinks=True)
    had_containers_cache = CONTAINERS_CACHE.exists()
    pm = rs.Podman(base, plugins, tag, SUBNET, network_prefix="clipm", bridge_prefix="clipb",
                   exec_prefix=["nsenter", f"--net=/run/netns/{node}"])
    sh("ip", "netns", "add", node)
    try:
        sh("ip", "-n", node, "link", "set", "lo", "up")
        rs.build_tarball(base / "rootfs.tar")
        res = sh(*pm.exec_prefix, "podman", "--root", pm.root, "--runroot", pm.runroot, "--storage-driver", "vfs",
                 "info", env=pm.env, check=False)
        if res.returncode != 0:
            pytest.skip(f"podman cannot run here: {res.stderr.strip()[-300:]}")
        pm("import", base / "rootfs.tar", rs.PODMAN_IMAGE)
        yield pm, node, plugins
    finally:
        pm("rm", "--all", "--force", "--time", "0", check=False, timeout=180)
        for cached in LIBCNI_CACHE.glob(f"{pm.network}-*"):
            cached.unlink()
        rs.unmount_under(base)
        for d in (pm.root, pm.runroot):
            shutil.rmtree(d, ignore_errors=True)
        if not had_containers_cache:
            shutil.rmtree(CONTAINERS_CACHE, ignore_errors=True)
        sh("ip", "netns", "del", node, check=False)  # its bridge, veths and rules go with it


def test_podmans_attachment_is_listed_and_deleted(node_podman):
    pm, node, plugins = node_podman
    name = f"web{pm.tag}"
    pm("run", "-d", "--name", name, "--network", pm.network, "-p", f"{HOST_PORT}:8080", rs.PODMAN_IMAGE,
       "httpd", "-f", "-p", "8080", "-h", "/www")
    cid = pm("inspect", "-f", "{{.Id}}", name)
    sandbox = pm("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name)
    ip = pm.ip_of(name)
    assert ip and sandbox.startswith("/run/netns/")
    assert (LIBCNI_CACHE / f"{pm.network}-{cid}-eth0").exists()  # podman's libcni wrote it

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NETCONFPATH"))}

    def cni_bridge(*args, check=True):
        # the default cache dir (/var/lib/cni), where podman's libcni keeps its results
        return sh("nsenter", f"--net=/run/netns/{node}", plugins / "cni-bridge", *args,
                  "--conf-dir", pm.conf_dir, check=check, env=env)

    def in_node(*cmd):
        return sh("nsenter", f"--net=/run/netns/{node}", *cmd).stdout

    [row] = json.loads(cni_bridge("ls", pm.network, "--json").stdout)
    assert row == {**row, "network": pm.network, "containerId": cid, "ifname": "eth0", "netns": sandbox,
                   "addresses": [f"{ip}/24"], "ports": [f"{HOST_PORT}:8080/tcp"], "netnsPresent": True,
                   "lease": True, "rules": True, "stale": False}
    line = [x for x in cni_bridge("ls", pm.network).stdout.splitlines() if x.startswith(pm.network)]
    assert len(line) == 1 and line[0].split()[1] == cid[:12] and line[0].endswith("ok")
    assert str(HOST_PORT) in in_node("nft", "list", "map", "inet", "cni_bridge", "portmap-any4")  # our portmap's

    # DEL by the netns's name: the cache names podman's container id
    cni_bridge("del", pm.network, os.path.basename(sandbox))
    assert json.loads(in_node("ip", "-j", "link", "show", "master", pm.bridge) or "[]") == []
    assert [p.name for p in (pm.data_dir / pm.network).iterdir()
            if p.name != "lock" and not p.name.startswith("last_reserved_ip")] == []
    table = in_node("nft", "list", "table", "inet", "cni_bridge")
    assert ip not in table and str(HOST_PORT) not in table  # bridge and portmap ran their DEL
    assert f"{ip}/32" not in in_node("iptables-save")  # and the reference firewall its own
    assert not (LIBCNI_CACHE / f"{pm.network}-{cid}-eth0").exists()
    assert json.loads(cni_bridge("ls", pm.network, "--json").stdout) == []

    # podman's own teardown still succeeds (its DEL finds nothing left to do)
    pm("rm", "--force", "--time", "0", name, timeout=180)
    assert pm("ps", "-a", "-q") == ""
    assert not os.path.exists(sandbox)
