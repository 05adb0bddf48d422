"""Shared by the e2e tests that drive real runtimes (podman, docker, containerd).

- A container image's root filesystem from the host's busybox-static, as a tarball for
  `podman import` / `docker import` (there is no registry on these machines): /bin/busybox
  with every applet as a link, /www/index.html for `httpd -h /www`, and the few files a
  runtime expects (/etc/passwd, /etc/group, /tmp). The same root filesystem as a whole image
  (a docker-archive with one layer and an entrypoint) for `ctr images import`.
- Picking names and numbers that collide with nothing on the host (a free 10.213.x.0/24,
  a free TCP port), and looking at the host with independent tools (nft, urllib).
"""

import hashlib
import io
import json
import platform
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request

import pytest
from ipaddress import ip_network
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
INDEX = "hello from cni-bridge e2e\n"


def busybox_is_static() -> bool:
    if not BUSYBOX.exists():
        return False
    out = subprocess.run(["file", "-L", str(BUSYBOX)], capture_output=True, text=True).stdout if shutil.which("file") else ""
    # without `file`, trust the package (busybox-static installs /bin/busybox)
    return "statically linked" in out or not out


def build_tarball(path: Path) -> Path:
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    now = time.time()

    def add_dir(tar, name):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
        tar.addfile(info)

    def add_file(tar, name, data: bytes, mode=0o644):
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, now
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "www", "proc", "sys", "dev", "run", "root"):
            add_dir(tar, d)
        info = tarfile.TarInfo("tmp")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777, now
        tar.addfile(info)
        add_file(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet == "bin/busybox":
                continue
            info = tarfile.TarInfo(applet)
            info.type, info.mtime = tarfile.SYMTYPE, now
            info.linkname = "/bin/busybox"
            tar.addfile(info)
        add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_file(tar, "www/index.html", INDEX.encode())
    return path


# Go's names for the machine types this might run on (an image's config names its architecture).
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def build_image_archive(path: Path, name: str, entrypoint: list[str]) -> Path:
    """A docker-archive (`docker save` format) of one image: the busybox root filesystem as its
    only layer, `entrypoint` as what it runs, tagged `name`."""
    layer = build_tarball(path.with_suffix(".layer.tar"))
    layer_digest = hashlib.sha256(layer.read_bytes()).hexdigest()
    config = json.dumps({
        "architecture": GO_ARCH.get(platform.machine(), platform.machine()), "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
    }).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": [f"{layer_digest}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for member, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), time.time()
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, arcname=f"{layer_digest}/layer.tar")
    layer.unlink()
    return path


def stop_daemon(proc: subprocess.Popen | None) -> None:
    """SIGTERM to a daemon we started, a bounded wait, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def sh(*cmd, timeout=120, env=None) -> subprocess.CompletedProcess:
    """Run a command (never raises on failure; look at returncode)."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)


def free_subnet(skip):
    """A 10.213.x.0/24 (x in 100..199) that no route of the host overlaps; `skip(reason)` if none."""
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    used = []
    for r in routes:
        dst = r.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                pass
    for x in random.sample(range(100, 200), 100):
        net = ip_network(f"10.213.{x}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    skip("no free 10.213.x.0/24 on this host")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def masq_elements() -> list[tuple[str, str]]:
    """(ip, comment) of the elements in table inet cni_bridge's maps, on the real host."""
    res = sh("nft", "-j", "list", "table", "inet", "cni_bridge")
    if res.returncode != 0:
        return []
    out = []
    for item in json.loads(res.stdout)["nftables"]:
        for elem in item.get("map", {}).get("elem", []):
            key = elem[0]
            out.append((key["elem"]["val"], key["elem"].get("comment", "")) if isinstance(key, dict) else (key, ""))
    return out


def remove_network_leftovers(network: str, bridge: str, subnet) -> None:
    """Teardown after a failure: the bridge, `network`'s masquerade elements, the subnet's chain.

    Only names this test chose; the table itself stays (other networks may use it).
    """
    sh("ip", "link", "del", bridge)
    for ip, comment in masq_elements():
        if comment.startswith(f"{network}/"):
            sh("nft", "delete", "element", "inet", "cni_bridge", "masq4", f"{{ {ip} }}")
    # refused by the kernel while an element still jumps to it
    sh("nft", "delete", "chain", "inet", "cni_bridge", f"masq-{subnet.network_address}_{subnet.prefixlen}")


def unmount_under(directory: Path) -> None:
    """Lazily unmount everything mounted below `directory` (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(f"{directory}/")), reverse=True):
        sh("umount", "-l", mnt)


def http_get(url: str, tries: int = 20) -> str:
    """GET with bounded retries (a server may still be starting)."""
    last = None
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.read().decode()
        except OSError as err:
            last = err
            time.sleep(0.25)
    raise AssertionError(f"GET {url}: {last}")


def _nft_tables() -> set[tuple[str, str]]:
    listing = json.loads(sh("nft", "-j", "list", "tables").stdout or '{"nftables": []}')
    return {(item["table"]["family"], item["table"]["name"]) for item in listing["nftables"] if "table" in item}


LIBCNI_DIRS = (Path("/var/lib/cni/results"), Path("/var/lib/cni"))
FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


@pytest.fixture(scope="module", autouse=True)
def host_netfilter_restored():
    """Put the host back as the module found it.

    The runtimes under test plug containers into the real host netns, where our bridge
    (table inet cni_bridge), the reference portmap and firewall (iptables-nft tables) create
    nftables tables that outlive their last container, and isGateway turns on forwarding.
    Tables that did not exist before the module are removed; forwarding is reset. podman's
    libcni also makes its result cache directory, which goes too if it was not there.
    """
    tables_before = _nft_tables()
    forwarding_before = {path: Path(path).read_text() for path in FORWARDING}
    new_dirs = [d for d in LIBCNI_DIRS if not d.exists()]
    yield
    for directory in new_dirs:  # deepest first; only if the runtime left them empty
        try:
            directory.rmdir()
        except OSError:
            pass
    for family, name in sorted(_nft_tables() - tables_before):
        subprocess.run(["nft", "delete", "table", family, name], check=False)
    for path, value in forwarding_before.items():
        Path(path).write_text(value)
