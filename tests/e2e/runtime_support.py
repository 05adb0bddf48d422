"""Shared by the e2e tests that drive real runtimes (podman, docker, containerd).

- A container image's root filesystem from the host's busybox-static, as a tarball for
  `podman import` / `docker import` (there is no registry on these machines): /bin/busybox
  with every applet as a link, /www/index.html for `httpd -h /www`, and the few files a
  runtime expects (/etc/passwd, /etc/group, /tmp). The same root filesystem as a whole image
  (a docker-archive with one layer and an entrypoint) for `ctr images import`.
- Picking names and numbers that collide with nothing on the host (a free 10.213.x.0/24,
  a free TCP port), and looking at the host with independent tools (nft, urllib).
- A private dockerd (Dockerd): its own data root, exec root, socket and config; podman 4
  with its CNI backend and private storage and config (Podman).
"""

import hashlib
import io
import json
import os
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


def masq_elements(exec_prefix=()) -> list[tuple[str, str]]:
    """(ip, comment) of the pod addresses in table inet cni_bridge's masquerade sets (pods4,
    pods6), in the netns exec_prefix runs in (e.g. ["ip", "netns", "exec", NODE])."""
    res = sh(*exec_prefix, "nft", "-j", "list", "table", "inet", "cni_bridge")
    if res.returncode != 0:
        return []
    out = []
    for item in json.loads(res.stdout)["nftables"]:
        if item.get("set", {}).get("name") in ("pods4", "pods6"):
            for elem in item["set"].get("elem", []):
                out.append((elem["elem"]["val"], elem["elem"].get("comment", "")) if "elem" in elem else (elem, ""))
    return out


def remove_network_leftovers(network: str, bridge: str, subnet) -> None:
    """Teardown after a failure: the bridge and `network`'s masquerade elements.

    Only names this test chose; the table itself stays (other networks may use it).
    """
    sh("ip", "link", "del", bridge)
    for ip, comment in masq_elements():
        if comment.startswith(f"{network}/"):
            sh("nft", "delete", "element", "inet", "cni_bridge", "pods4", f"{{ {ip} }}")
            sh("nft", "delete", "element", "inet", "cni_bridge", "pods4_local", f"{{ {ip} . {subnet} }}")


def unmount_under(directory: Path) -> None:
    """Lazily unmount everything mounted below `directory` (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(f"{directory}/")), reverse=True):
        sh("umount", "-l", mnt)


# An HTTP GET with bounded retries (a server may still be starting), for a namespace:
# `python3 -c GET_WITH_RETRIES URL [TRIES]` prints the body, or exits non-zero.
GET_WITH_RETRIES = r"""
import sys, time, urllib.request
for attempt in range(int(sys.argv[2]) if len(sys.argv) > 2 else 20):
    try:
        print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end="")
        break
    except OSError as err:
        last = err
        time.sleep(0.25)
else:
    sys.exit(f"GET {sys.argv[1]}: {last}")
"""


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


# ---- a private dockerd (Debian's docker.io) ------------------------------------------------

DOCKER = Path("/usr/bin/docker")  # the Debian client: a newer one in /usr/local/bin shadows it
DOCKERD = Path("/usr/sbin/dockerd")
DOCKER_IMAGE = "cnib-busybox:e2e"


def require_docker():
    if os.geteuid() != 0:
        pytest.skip("needs root (dockerd, network namespaces)")
    missing = [str(p) for p in (DOCKER, DOCKERD) if not p.exists()]
    if missing or not shutil.which("containerd") or not shutil.which("runc"):
        pytest.skip(f"docker.io (dockerd, /usr/bin/docker, containerd, runc) not installed: {missing}; scripts/test installs it")
    if not busybox_is_static():
        pytest.skip("/bin/busybox is not a static busybox (Debian package busybox-static)")
    if not shutil.which("nsenter"):
        pytest.skip("nsenter (util-linux) missing")


class Dockerd:
    def __init__(self, base: Path):
        self.base = base
        self.sock = base / "docker.sock"
        self.pidfile = base / "docker.pid"
        self.log = base / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "CNI_"))}
        self.env["DOCKER_CONFIG"] = str(base / "client")

    def start(self) -> None:
        # Our own config file, not the host's /etc/docker/daemon.json; it also keeps the
        # daemon's identity key out of /etc/docker (docker 20.10 has no flag for it).
        (self.base / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(self.base / "key.json")}))
        cmd = [
            str(DOCKERD), "--config-file", str(self.base / "daemon.json"),
            "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
            "-H", f"unix://{self.sock}", "--pidfile", str(self.pidfile),
            "--bridge", "none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
            "--storage-driver", "vfs", "--exec-opt", "native.cgroupdriver=cgroupfs",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.sock.exists() and self("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-600:]
        self.stop()
        pytest.skip(f"dockerd did not start: {tail}")

    def __call__(self, *args, check=True, timeout=120):
        res = sh(DOCKER, "-H", f"unix://{self.sock}", *args, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(map(str, args))}: exit {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res if not check else res.stdout.strip()

    def stop(self) -> None:
        """Stop our dockerd (it stops the containerd it started), and that containerd if it did not."""
        stop_daemon(self.proc)
        self._kill_own_containerd()

    def _kill_own_containerd(self) -> None:
        """If our dockerd died without stopping its containerd, stop that one (by its pid
        file under our exec root, and only if its command line names our dirs)."""
        pidfile = self.base / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.base).encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    require_docker()
    base = tmp_path_factory.mktemp("docker")
    d = Dockerd(base)
    try:
        d.start()
        build_tarball(base / "rootfs.tar")
        d("import", base / "rootfs.tar", DOCKER_IMAGE)
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            ids = d("ps", "-a", "-q", check=False).stdout.split()
            if ids:
                d("rm", "--force", *ids, check=False, timeout=180)
        d.stop()
        unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


# ---- podman 4, CNI backend ------------------------------------------------------------------

PODMAN_REFERENCE = Path("/usr/lib/cni")
PODMAN_IMAGE = "localhost/cnib-busybox:e2e"


class Podman:
    """podman 4 with its CNI backend and everything private: CONTAINERS_CONF, --root and
    --runroot (vfs), tmp_dir, a network config dir holding one conflist (bridge, portmap,
    firewall and tuning, as podman's default: ours from `plugins`, the others from the
    reference plugins after it), the leases' dataDir.
    exec_prefix: a command podman runs under (e.g. nsenter --net=NODE, to plug containers
    into a node namespace instead of the host's)."""

    def __init__(self, base: Path, plugins: Path, tag: str, subnet, network_prefix="cnibpm", bridge_prefix="cnibp",
                 exec_prefix=()):
        self.base, self.tag, self.subnet = base, tag, subnet
        self.exec_prefix = [str(a) for a in exec_prefix]
        self.network = f"{network_prefix}{tag}"
        self.bridge = f"{bridge_prefix}{tag}"
        self.gateway = str(subnet.network_address + 1)
        self.data_dir = base / "leases"
        self.conf_dir = base / "net"
        self.conf_dir.mkdir()
        conflist = {
            "cniVersion": "0.4.0",
            "name": self.network,
            "plugins": [
                {
                    "type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
                    "ipam": {
                        "type": "host-local", "dataDir": str(self.data_dir),
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "ranges": [[{"subnet": str(subnet), "gateway": self.gateway}]],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "firewall"},
                {"type": "tuning"},
            ],
        }
        (self.conf_dir / f"{self.network}.conflist").write_text(json.dumps(conflist, indent=2))
        (base / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{plugins}", "{PODMAN_REFERENCE}"]\n'
            f'network_config_dir = "{self.conf_dir}"\n'
            f'default_network = "{self.network}"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            f'tmp_dir = "{base / "tmp"}"\n'
            'events_logger = "none"\n'
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "CONTAINERS_"))}
        self.env["CONTAINERS_CONF"] = str(base / "containers.conf")
        self.root, self.runroot = base / "root", base / "run"
        self.sandboxes: dict[str, str] = {}

    def __call__(self, *args, check=True, timeout=120) -> str:
        cmd = [*self.exec_prefix, "podman", "--root", self.root, "--runroot", self.runroot, "--storage-driver", "vfs",
               "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args]
        res = sh(*cmd, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))}: exit {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res.stdout.strip()

    def ip_of(self, name: str) -> str:
        return self("inspect", "-f", f"{{{{.NetworkSettings.Networks.{self.network}.IPAddress}}}}", name)


def require_podman():
    if os.geteuid() != 0:
        pytest.skip("needs root (podman with the CNI backend plugs containers into the host netns)")
    missing = [tool for tool in ("podman", "runc") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian packages podman runc; scripts/test installs them)")
    if not busybox_is_static():
        pytest.skip("/bin/busybox is not a static busybox (Debian package busybox-static)")
    for name in ("firewall", "tuning"):
        if not (PODMAN_REFERENCE / name).exists():
            pytest.skip(f"reference plugin {PODMAN_REFERENCE / name} missing (containernetworking-plugins)")
    version = sh("podman", "--version").stdout.split()[-1]
    if int(version.split(".")[0]) >= 5:
        pytest.skip(f"podman {version} has no CNI backend")
