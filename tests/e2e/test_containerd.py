"""containerd 1.6's CRI plugin networks pods with OUR plugins and nothing else: its single
bin_dir is build/bin, which holds only our build, so the loopback it runs for every pod is
ours too.

The containerd is the test's own: root, state, sockets, runc root, config and CNI conf_dir in
a temp dir, pod network namespaces under its state dir, the pods' cgroups under a parent of
the test's name. It runs inside a throwaway "node" namespace (`nsenter --net`), so the bridge,
its masquerade table and every veth live there and go with it. The CRI is driven as kubelet
drives it, over gRPC (tests/e2e/cri: a small .proto of the CRI v1 messages used, compiled here
with Debian's grpc tools, and a client run under Debian's python3). The pod sandbox image is
made from busybox-static and runs `httpd` as its one process. The conflist is
conf/10-bridge-kubelet.conflist with test names and addresses.

Everything the module made is stopped and removed at the end, even after a failure: pods,
containerd, its shims and their processes, mounts, cgroups, dirs, namespaces.
"""

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

import runtime_support as rs
from cni_bridge.suite import PLUGINS
from plugin_runner import lease_files
from runtime_support import sh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRI_DIR = Path(__file__).resolve().parent / "cri"
SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, where python3-grpcio is installed
CONFLIST = ROOT / "conf" / "10-bridge-kubelet.conflist"
IMAGE = "localhost/lbk-pod:e2e"
POD_PORT = 8080
STREAM_PORT = 18200  # containerd's streaming server, on 127.0.0.1 in the node namespace
HOST_PORT = 18201
SUBNET = ip_network("10.181.60.0/24")
CLIENT_LINK = ("10.181.61.1", "10.181.61.2")  # node and client ends of a /24
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's runc and containerd-shim-runc-v2 first
# containerd 1.6 puts its shims' sockets here whatever its config says.
SHIM_SOCKETS = Path("/run/containerd/s")


def _require_containerd() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (containerd, network namespaces)")
    missing = [tool for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "nsenter")
               if not shutil.which(tool, path=PATH)]
    if missing:
        pytest.skip(f"{missing} not installed (Debian packages containerd runc util-linux; scripts/test installs them)")
    if not rs.busybox_is_static():
        pytest.skip("/bin/busybox is not a static busybox (Debian package busybox-static)")
    probe = sh(SYSTEM_PYTHON, "-c", "import grpc, grpc_tools")
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} lacks grpc (Debian packages python3-grpcio python3-grpc-tools): {probe.stderr[-200:]}")


@pytest.fixture(scope="module", autouse=True)
def _requirements():
    _require_containerd()


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    """build/bin as scripts/build left it: the CRI's one plugin dir."""
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    missing = [name for name in ("bridge", "host-local", "loopback") if not (src / name).exists()]
    if missing:
        pytest.skip(f"{src} has no {', '.join(missing)}: run scripts/build first")
    ours = {".cni-bridge", "cni-bridge", *PLUGINS}  # the bundle, the command, the plugins
    others = sorted(p.name for p in src.iterdir() if p.name not in ours)
    assert not others, f"{src} holds more than our build: {others}"
    return src


@pytest.fixture(scope="module")
def cri_modules(tmp_path_factory) -> Path:
    """The Python modules for the CRI messages, generated from cri/runtime_v1.proto."""
    out = tmp_path_factory.mktemp("cri-generated")
    res = sh(SYSTEM_PYTHON, "-m", "grpc_tools.protoc", f"-I{CRI_DIR}", f"--python_out={out}",
             f"--grpc_python_out={out}", CRI_DIR / "runtime_v1.proto")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def node():
    """A throwaway namespace for containerd to run in, standing in for the node."""
    name = f"lbk-node-{secrets.token_hex(3)}"
    res = sh("ip", "netns", "add", name)
    assert res.returncode == 0, res.stderr
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield Namespace(name)
    finally:
        sh("ip", "netns", "del", name)


class Namespace:
    def __init__(self, name: str):
        self.name, self.path = name, f"/run/netns/{name}"

    def run(self, *cmd, check: bool = True) -> subprocess.CompletedProcess:
        res = sh("nsenter", f"--net={self.path}", *cmd)
        if check:
            assert res.returncode == 0, f"{cmd} in {self.name}: {res.stdout}{res.stderr}"
        return res

    def json(self, *cmd):
        out = self.run(*cmd).stdout
        return json.loads(out) if out.strip() else []


def http_get(ns: Namespace, url: str, tries: int = 1) -> subprocess.CompletedProcess:
    """GET url from inside ns (the test's interpreter, run there), each try bounded by a socket
    timeout; more tries for a server that may still be starting."""
    client = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')"
    for _ in range(tries):
        res = ns.run(sys.executable, "-c", client, url, check=False)
        if res.returncode == 0:
            break
        time.sleep(0.25)
    return res


class Containerd:
    """Our containerd, in the node's namespace, everything it keeps under `base`."""

    def __init__(self, base: Path, node: Namespace, bin_dir: Path, cri_modules: Path):
        self.base, self.node, self.cri_modules = base, node, cri_modules
        self.tag = secrets.token_hex(3)
        self.socket = base / "containerd.sock"
        self.log = base / "containerd.log"
        self.conf_dir = base / "net.d"
        self.data_dir = base / "leases"
        self.cgroup_parent = f"lbk-{self.tag}"
        self.bridge = f"lbk{self.tag}"
        self.proc: subprocess.Popen | None = None
        self.pod_ids: list[str] = []  # every pod ever run, for the shim sockets at teardown
        self.network = self._write_conflist()
        (base / "config.toml").write_text(f"""\
version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "{STREAM_PORT}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{base}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{self.conf_dir}"
    max_conf_num = 1
""")

    def _write_conflist(self) -> dict:
        """conf/10-bridge-kubelet.conflist on this test's bridge, subnet and dataDir; without
        portmap until ours is built (the bin_dir holds nothing else)."""
        conflist = json.loads(CONFLIST.read_text())
        conflist["name"] = f"lbk-net-{self.tag}"
        conflist["plugins"] = [p for p in conflist["plugins"] if p["type"] in PLUGINS]
        bridge = next(p for p in conflist["plugins"] if p["type"] == "bridge")
        bridge["bridge"] = self.bridge
        bridge["ipam"]["ranges"] = [[{"subnet": str(SUBNET)}]]
        bridge["ipam"]["dataDir"] = str(self.data_dir)
        self.conf_dir.mkdir()
        (self.conf_dir / "10-lbk.conflist").write_text(json.dumps(conflist, indent=2))
        return conflist

    # -- the daemon

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "CONTAINERD_"))}
        env["PATH"] = PATH
        cmd = ["nsenter", f"--net={self.node.path}", "containerd", "--config", str(self.base / "config.toml")]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        for _ in range(300):  # a bounded wait for the socket and the CRI behind it
            if self.proc.poll() is not None:
                break
            if self.socket.exists() and self.cri_call("Version", check=False) is not None:
                return
            time.sleep(0.2)
        pytest.skip(f"containerd did not start: {self.log.read_text(errors='replace')[-600:]}")

    def network_ready(self) -> dict:
        """The CRI's NetworkReady condition, once it has read our conflist (bounded wait)."""
        condition = {}
        for _ in range(100):
            status = self.cri_call("Status")
            condition = next(c for c in status["status"]["conditions"] if c["type"] == "NetworkReady")
            if condition["status"]:
                break
            time.sleep(0.2)
        return condition

    # -- clients

    def cri_call(self, method: str, check: bool = True, **request):
        """One CRI call; the reply as a dict (None when it failed and check is false)."""
        res = sh(SYSTEM_PYTHON, CRI_DIR / "client.py", self.cri_modules, self.socket, method, json.dumps(request),
                 timeout=180)
        if res.returncode != 0:
            if check:
                raise AssertionError(f"CRI {method}: {res.stderr.strip()}\n{self.log_tail()}")
            return None
        return json.loads(res.stdout)

    def ctr(self, *args) -> str:
        res = sh("ctr", "--address", self.socket, "--namespace", "k8s.io", *args, timeout=300)
        assert res.returncode == 0, f"ctr {args}: {res.stdout}{res.stderr}"
        return res.stdout

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""

    # -- pods

    def run_pod(self, name: str, port_mappings=()) -> "Pod":
        config = {
            "metadata": {"name": name, "uid": f"{name}-{self.tag}", "namespace": "lbk", "attempt": 0},
            "hostname": name,
            "linux": {"cgroup_parent": f"/{self.cgroup_parent}"},
            "port_mappings": list(port_mappings),
        }
        pod_id = self.cri_call("RunPodSandbox", config=config)["pod_sandbox_id"]
        self.pod_ids.append(pod_id)
        status = self.cri_call("PodSandboxStatus", pod_sandbox_id=pod_id, verbose=True)
        info = json.loads(status["info"]["info"])
        netns = next(ns["path"] for ns in info["runtimeSpec"]["linux"]["namespaces"] if ns["type"] == "network")
        return Pod(pod_id, status["status"], netns, info["cniResult"])

    def stop_and_remove(self, pod_id: str) -> None:
        self.cri_call("StopPodSandbox", pod_sandbox_id=pod_id)
        self.cri_call("RemovePodSandbox", pod_sandbox_id=pod_id)

    def pods(self) -> list[dict]:
        return self.cri_call("ListPodSandbox")["items"]

    def teardowns(self, pod_id: str) -> int:
        """How often containerd reports tearing down the pod's network (a CNI DEL) as done."""
        return self.log.read_text(errors="replace").count(f'TearDown network for sandbox \\"{pod_id}\\" successfully')

    # -- what the node holds

    def bridge_ports(self) -> list[str]:
        return [link["ifname"] for link in self.node.json("ip", "-j", "link", "show", "master", self.bridge)]

    def leases(self) -> dict[str, str]:
        return lease_files(self.data_dir / self.network["name"])

    def masquerade_elements(self) -> list:
        return rs.masq_elements(["nsenter", f"--net={self.node.path}"])

    def pod_processes(self) -> list[int]:
        """Processes in the pods' cgroups (each cgroup v1 hierarchy, or the v2 tree)."""
        pids = set()
        for directory in cgroup_dirs(self.cgroup_parent):
            for procs in directory.rglob("cgroup.procs"):
                pids.update(int(pid) for pid in procs.read_text().split())
        return sorted(pids)


class Pod:
    def __init__(self, pod_id: str, status: dict, netns: str, cni_result: dict):
        self.id, self.status, self.netns, self.cni_result = pod_id, status, netns, cni_result
        self.ip = status["network"]["ip"]

    def addresses(self, ifname: str) -> list[str]:
        info = json.loads(sh("nsenter", f"--net={self.netns}", "ip", "-j", "addr", "show", "dev", ifname).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for a in info[0]["addr_info"] if a.get("scope") != "link"]

    def link(self, ifname: str) -> dict:
        return json.loads(sh("nsenter", f"--net={self.netns}", "ip", "-j", "link", "show", "dev", ifname).stdout)[0]


def cgroup_dirs(name: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    candidates = [root / name] + [hierarchy / name for hierarchy in root.iterdir() if hierarchy.is_dir()]
    return [d for d in candidates if d.is_dir()]


def shim_socket(containerd_socket: Path, pod_id: str) -> Path:
    """Where containerd 1.6 puts the socket of a pod's shim: a hash of its address, namespace and id."""
    digest = hashlib.sha256(f"{containerd_socket}/k8s.io/{pod_id}".encode()).hexdigest()
    return SHIM_SOCKETS / digest


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, node, bin_dir, cri_modules):
    base = tmp_path_factory.mktemp("containerd")
    made_run_dirs = [d for d in (SHIM_SOCKETS.parent, SHIM_SOCKETS) if not d.exists()]
    # containerd's libcni caches results in /var/lib/cni/results (no option moves it)
    made_run_dirs += [d for d in reversed(rs.LIBCNI_DIRS) if not d.exists()]
    daemon = Containerd(base, node, bin_dir, cri_modules)
    try:
        daemon.start()
        rs.build_image_archive(base / "pod-image.tar", IMAGE, ["/bin/busybox", "httpd", "-f", "-p", str(POD_PORT), "-h", "/www"])
        daemon.ctr("images", "import", "--snapshotter", "native", str(base / "pod-image.tar"))
        for _ in range(100):  # the CRI learns of imported images from containerd's events
            if daemon.cri_call("ImageStatus", image={"image": IMAGE}).get("image"):
                break
            time.sleep(0.2)
        yield daemon
    finally:
        _teardown(daemon, made_run_dirs)


def _teardown(daemon: Containerd, made_run_dirs: list[Path]) -> None:
    """Stop and remove what the module made, whatever state a failure left it in."""
    if daemon.proc is not None and daemon.proc.poll() is None:
        for pod in (daemon.cri_call("ListPodSandbox", check=False) or {}).get("items", []):
            for method in ("StopPodSandbox", "RemovePodSandbox"):
                daemon.cri_call(method, check=False, pod_sandbox_id=pod["id"])
    rs.stop_daemon(daemon.proc)
    # Shims outlive a containerd that died; ours are the ones given our socket.
    for pid in _pids_with_argument(str(daemon.socket)):
        _kill(pid)
    for pid in daemon.pod_processes():
        _kill(pid)
    for _ in range(100):  # a killed process leaves its cgroup once it is reaped
        if not daemon.pod_processes():
            break
        time.sleep(0.1)
    for pod_id in daemon.pod_ids:
        shim_socket(daemon.socket, pod_id).unlink(missing_ok=True)
        for entry in rs.LIBCNI_DIRS[0].glob(f"*-{pod_id}-*"):  # a cache a failed teardown left
            entry.unlink()
    for directory in reversed(made_run_dirs):
        try:
            directory.rmdir()
        except OSError:  # someone else's containerd uses it now
            pass
    rs.unmount_under(daemon.base)
    for directory in cgroup_dirs(daemon.cgroup_parent):
        for cgroup in sorted((d for d in directory.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
            cgroup.rmdir()
        directory.rmdir()
    shutil.rmtree(daemon.base, ignore_errors=True)


def _pids_with_argument(argument: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in args:
            pids.append(int(proc.name))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- the tests ---------------------------------------------------------------------------


def test_containerd_reads_our_conflist(containerd):
    condition = containerd.network_ready()
    assert condition["status"], condition


def test_pod_sandbox_on_our_plugins(containerd):
    assert containerd.network_ready()["status"]
    pod = containerd.run_pod("lbk-pod")
    try:
        assert pod.status["state"] == "SANDBOX_READY"
        assert ip_address(pod.ip) in SUBNET
        # seen from outside, in the pod's namespace: lo up (our loopback), eth0 with its address
        assert "UP" in pod.link("lo")["flags"]
        assert pod.addresses("lo")[0] == "127.0.0.1/8"
        assert pod.addresses("eth0") == [f"{pod.ip}/{SUBNET.prefixlen}"]
        # what our loopback told containerd
        lo = pod.cni_result["Interfaces"]["lo"]
        assert lo["Mac"] == "00:00:00:00:00:00" and lo["Sandbox"] == pod.netns
        assert [c["IP"] for c in lo["IPConfigs"]] == [a.split("/")[0] for a in pod.addresses("lo")]
        # on the node: one port on our bridge, a lease in our format, a masquerade element
        assert len(containerd.bridge_ports()) == 1
        assert containerd.leases() == {pod.ip: f"{pod.id}\r\neth0"}
        assert containerd.masquerade_elements()
        # the pod answers from the node's namespace
        assert containerd.node.run("ping", "-c", "1", "-W", "2", pod.ip, check=False).returncode == 0
        got = http_get(containerd.node, f"http://{pod.ip}:{POD_PORT}/", tries=20)
        assert got.stdout == rs.INDEX, got.stderr
    finally:
        containerd.stop_and_remove(pod.id)

    # StopPodSandbox and RemovePodSandbox each ran DEL through the chain, and both succeeded
    assert containerd.teardowns(pod.id) == 2, containerd.log_tail()
    assert containerd.pods() == []
    assert not os.path.exists(pod.netns)
    assert containerd.bridge_ports() == []
    assert containerd.leases() == {}
    assert containerd.masquerade_elements() == []
    assert containerd.pod_processes() == []
    assert not shim_socket(containerd.socket, pod.id).exists()


@pytest.fixture
def client(containerd):
    """A namespace joined to the node by a veth: another host on the node's network."""
    if "portmap" not in PLUGINS:
        pytest.skip("our portmap is not in cni_bridge.suite.PLUGINS yet, and the CRI's bin_dir holds only our build")
    name = f"lbk-cli-{containerd.tag}"
    node_end = f"lbkn{containerd.tag}"
    assert sh("ip", "netns", "add", name).returncode == 0
    try:
        ns = Namespace(name)
        for cmd in (
            ("ip", "-n", containerd.node.name, "link", "add", node_end, "type", "veth", "peer", "name", "eth0",
             "netns", name),
            ("ip", "-n", containerd.node.name, "addr", "add", f"{CLIENT_LINK[0]}/24", "dev", node_end),
            ("ip", "-n", containerd.node.name, "link", "set", node_end, "up"),
            ("ip", "-n", name, "addr", "add", f"{CLIENT_LINK[1]}/24", "dev", "eth0"),
            ("ip", "-n", name, "link", "set", "eth0", "up"),
            ("ip", "-n", name, "link", "set", "lo", "up"),
        ):
            res = sh(*cmd)
            assert res.returncode == 0, f"{cmd}: {res.stderr}"
        yield ns
    finally:
        sh("ip", "netns", "del", name)  # takes the veth pair with it


def test_host_port_pod(containerd, client, bin_dir):
    """A hostPort, as kubelet asks for one: the CRI hands port_mappings to our portmap."""
    assert (bin_dir / "portmap").exists(), f"{bin_dir} has no portmap: run scripts/build"
    mapping = {"protocol": "TCP", "container_port": POD_PORT, "host_port": HOST_PORT}
    pod = containerd.run_pod("lbk-web", port_mappings=[mapping])
    url = f"http://{CLIENT_LINK[0]}:{HOST_PORT}/"
    try:
        got = http_get(client, url, tries=20)
        assert got.stdout == rs.INDEX, got.stderr  # from another host, through the node's address
        got = http_get(containerd.node, url)
        assert got.stdout == rs.INDEX, got.stderr  # from the node itself
    finally:
        containerd.stop_and_remove(pod.id)

    assert containerd.teardowns(pod.id) == 2, containerd.log_tail()
    assert http_get(client, url).returncode != 0
    ruleset = containerd.node.run("nft", "list", "ruleset").stdout
    assert pod.ip not in ruleset and str(HOST_PORT) not in ruleset, ruleset
