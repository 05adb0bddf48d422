"""podman 4 with its CNI backend runs OUR bridge and host-local (portmap, firewall and tuning
chained after them are the reference ones, as in podman's own default conflist).

The plugin dir is made by scripts/install (drop-in, from a private copy of build/bin).
Everything podman keeps is private to the test: CONTAINERS_CONF, --root/--runroot (vfs),
tmp_dir, the network config dir holding one conflist, the leases' dataDir. The image is a
busybox rootfs made here and `podman import`ed (no registry).

This runs in the REAL host netns: podman creates the containers' netns and the plugins
plug them into the host. So the bridge name, network name, subnet (a free 10.213.x.0/24)
and host port are unique, and teardown removes, even after a failure, only what this
module made: its containers, its bridge, its leases, its masquerade chain, its libcni
result cache files.
"""

import json
import os
import secrets
import shutil
from ipaddress import ip_address
from pathlib import Path

import pytest

import runtime_support as rs
from runtime_support import host_netfilter_restored  # noqa: F401  (autouse: restores the host)
from runtime_support import free_port, free_subnet, http_get, masq_elements, sh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = rs.PODMAN_IMAGE
CONTAINER_PORT = 8080
LIBCNI_CACHE = Path("/var/lib/cni/results")
CONTAINERS_CACHE = Path("/var/lib/containers")  # podman import writes a blob cache here


@pytest.fixture(scope="module")
def pm(tmp_path_factory):
    rs.require_podman()
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    if not (src / "bridge").exists():
        pytest.skip(f"{src}/bridge is missing: run scripts/build first")
    base = tmp_path_factory.mktemp("podman")
    # the plugin dir podman uses is made by scripts/install (drop-in) from a private copy
    build = base / "build"
    shutil.copytree(src, build, symlinks=True)
    plugins = base / "opt-cni-bin"
    res = sh(ROOT / "scripts" / "install", plugins, "--bin-dir", "", env={**os.environ, "CNI_BRIDGE_BIN": str(build)}, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    had_containers_cache = CONTAINERS_CACHE.exists()
    podman = rs.Podman(base, plugins, secrets.token_hex(3), free_subnet(pytest.skip))
    try:
        rs.build_tarball(base / "rootfs.tar")
        res = sh("podman", "--root", podman.root, "--runroot", podman.runroot, "--storage-driver", "vfs",
                 "info", env=podman.env)
        if res.returncode != 0:
            pytest.skip(f"podman cannot run here: {res.stderr.strip()[-300:]}")
        podman("import", base / "rootfs.tar", IMAGE)
        yield podman
    finally:
        _teardown(podman, had_containers_cache)


def _teardown(podman: rs.Podman, had_containers_cache: bool) -> None:
    podman("rm", "--all", "--force", "--time", "0", check=False, timeout=180)
    # podman's own netns files of our containers, if a removal failed half way
    for path in podman.sandboxes.values():
        if path and os.path.exists(path):
            sh("umount", path)
            with_suppressed(os.unlink, path)
    rs.remove_network_leftovers(podman.network, podman.bridge, podman.subnet)
    for cached in LIBCNI_CACHE.glob(f"{podman.network}-*"):
        cached.unlink()
    # storage: unmount whatever podman left mounted under our dirs, then remove them
    rs.unmount_under(podman.base)
    for d in (podman.root, podman.runroot):
        shutil.rmtree(d, ignore_errors=True)
    if not had_containers_cache:
        shutil.rmtree(CONTAINERS_CACHE, ignore_errors=True)


def with_suppressed(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


@pytest.fixture(scope="module")
def running(pm):
    """Two containers on our network: `web` (busybox httpd, port published) and `client`."""
    host_port = free_port()
    pm("run", "-d", "--name", f"web{pm.tag}", "--network", pm.network, "-p", f"{host_port}:{CONTAINER_PORT}",
       IMAGE, "httpd", "-f", "-p", str(CONTAINER_PORT), "-h", "/www")
    pm("run", "-d", "--name", f"client{pm.tag}", "--network", pm.network, IMAGE, "sleep", "600")
    names = {"web": f"web{pm.tag}", "client": f"client{pm.tag}"}
    for role, name in names.items():
        pm.sandboxes[role] = pm("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name)
    ips = {role: pm.ip_of(name) for role, name in names.items()}
    ids = {role: pm("inspect", "-f", "{{.Id}}", name) for role, name in names.items()}
    return {"names": names, "ips": ips, "ids": ids, "port": host_port}


def test_containers_are_on_our_bridge(pm, running):
    ips = running["ips"]
    for role, ip in ips.items():
        assert ip and ip_address(ip) in pm.subnet, (role, ip)
    assert ips["web"] != ips["client"]
    # addresses came from our host-local: leases in the conflist's dataDir, reference format
    leases = {p.name: p.read_bytes() for p in (pm.data_dir / pm.network).iterdir()
              if p.name != "lock" and not p.name.startswith("last_reserved_ip")}
    assert leases == {ips[r]: f"{running['ids'][r]}\r\neth0".encode() for r in ips}
    # two host veths on our bridge, the gateway address on it, a masquerade element each
    ports = json.loads(pm_sh("ip", "-j", "-d", "link", "show", "master", pm.bridge))
    assert sorted(p["linkinfo"]["info_kind"] for p in ports) == ["veth", "veth"]
    assert all(p["linkinfo"]["info_slave_data"]["hairpin"] for p in ports)
    addr = json.loads(pm_sh("ip", "-j", "-4", "addr", "show", "dev", pm.bridge))[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addr] == [(pm.gateway, 24)]
    ours = {ip: comment for ip, comment in masq_elements() if comment.startswith(f"{pm.network}/")}
    assert ours == {ips[r]: f"{pm.network}/{running['ids'][r]}/eth0" for r in ips}


def pm_sh(*cmd) -> str:
    res = sh(*cmd)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_containers_reach_each_other_and_the_host(pm, running):
    client, web_ip = running["names"]["client"], running["ips"]["web"]
    pm("exec", client, "ping", "-c", "1", "-W", "2", web_ip)
    pm("exec", client, "ping", "-c", "1", "-W", "2", pm.gateway)  # the host's side of the bridge
    # busybox wget -T segfaults (1.35): bound it with timeout instead
    body = pm("exec", client, "timeout", "10", "wget", "-q", "-O", "-", f"http://{web_ip}:{CONTAINER_PORT}/")
    assert body == rs.INDEX.strip()
    web = running["names"]["web"]
    pm("exec", web, "ping", "-c", "1", "-W", "2", running["ips"]["client"])


def test_host_reaches_the_containers(pm, running):
    for ip in running["ips"].values():
        assert sh("ping", "-c", "1", "-W", "2", ip).returncode == 0, ip
    assert http_get(f"http://{running['ips']['web']}:{CONTAINER_PORT}/") == rs.INDEX


def test_published_port(pm, running):
    """-p HOST:8080 through the reference portmap, chained after our bridge's result."""
    port = running["port"]
    assert http_get(f"http://127.0.0.1:{port}/") == rs.INDEX
    host_ips = [a["local"] for i in json.loads(pm_sh("ip", "-j", "-4", "addr", "show", "scope", "global"))
                for a in i["addr_info"] if i["ifname"] != pm.bridge and not i["ifname"].startswith(("e2e", "cni"))]
    if host_ips:
        assert http_get(f"http://{host_ips[0]}:{port}/") == rs.INDEX


def test_restart_reattaches(pm, running):
    """`podman restart`: DEL then ADD for the same container id; one lease, one element."""
    client = running["names"]["client"]
    pm("restart", "--time", "0", client)
    ip = pm.ip_of(client)
    running["ips"]["client"] = ip
    leases = {p.name: p.read_bytes() for p in (pm.data_dir / pm.network).iterdir()
              if p.name != "lock" and not p.name.startswith("last_reserved_ip")}
    assert sorted(leases) == sorted(running["ips"].values())
    assert leases[ip] == f"{running['ids']['client']}\r\neth0".encode()
    ours = [e for e in masq_elements() if e[1].startswith(f"{pm.network}/")]
    assert sorted(e[0] for e in ours) == sorted(running["ips"].values())
    pm("exec", client, "ping", "-c", "1", "-W", "2", running["ips"]["web"])
    ports = json.loads(pm_sh("ip", "-j", "link", "show", "master", pm.bridge))
    assert len(ports) == 2


def test_removal_leaves_nothing(pm, running):
    pm("rm", "--force", "--time", "0", *running["names"].values(), timeout=180)
    assert pm("ps", "-a", "-q") == ""
    # no veth on our bridge, no lease, no masquerade element, no port mapping, no netns
    assert json.loads(pm_sh("ip", "-j", "link", "show", "master", pm.bridge) or "[]") == []
    leases = [p.name for p in (pm.data_dir / pm.network).iterdir()
              if p.name != "lock" and not p.name.startswith("last_reserved_ip")]
    assert leases == []
    assert [e for e in masq_elements() if e[1].startswith(f"{pm.network}/")] == []
    saved = sh("iptables-save").stdout if shutil.which("iptables-save") else ""
    for ip in running["ips"].values():
        assert f"{ip}/32" not in saved and f"{ip}:" not in saved, ip
    assert f"--dport {running['port']}" not in saved
    for path in pm.sandboxes.values():
        assert not os.path.exists(path), path
    assert not list(LIBCNI_CACHE.glob(f"{pm.network}-*"))
