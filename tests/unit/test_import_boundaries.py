"""host-local and loopback start on every pod: importing them and running ADD must not load
what they do not need. Checked in a fresh interpreter started without site (as the frozen
build runs), so that nothing the environment preloads hides an import of ours.

loopback's ADD needs a network namespace: its child runs under `unshare --user
--map-root-user --net`, in a namespace of its own that ends with it."""

import ast
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Never wanted on a plugin's path.
ALWAYS_FORBIDDEN = ["nftables", "pydantic", "json", "ipaddress", "subprocess", "asyncio", "pathlib",
                    "cni_bridge.plugins.bridge", "cni_bridge.nft", "cni_bridge.models"]
FORBIDDEN = {
    "host-local": [*ALWAYS_FORBIDDEN, "re", "pyroute2", "cni_bridge.kernel", "cni_bridge.plugins.loopback"],
    "loopback": [*ALWAYS_FORBIDDEN, "ipam"],
}
# What pyroute2's message classes bring along; loopback must not load them once netlink no
# longer goes through pyroute2.
PYROUTE2_BAGGAGE = ["re", "logging", "typing", "multiprocessing", "platform"]

HOST_LOCAL_CHILD = r"""
import os, sys
before = set(sys.modules)
from cni_bridge.cni import skel
from ipam.host_local import PLUGIN
env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.0.0.9"}
conf = ('{"cniVersion": "0.4.0", "name": "net1", "type": "bridge", "ipam": {"type": "host-local", '
        '"dataDir": "%s", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]], '
        '"routes": [{"dst": "0.0.0.0/0"}]}}') % sys.argv[1]
code, out = skel.dispatch(PLUGIN, env, conf.encode())
for command in ("CHECK", "DEL"):
    code2, _ = skel.dispatch(PLUGIN, {**env, "CNI_COMMAND": command}, conf.encode())
    assert code2 == 0, (command, _)
print(repr((code, out.decode(), sorted(before), sorted(sys.modules))))
"""

LOOPBACK_CHILD = r"""
import os, sys
before = set(sys.modules)
from cni_bridge.cni import skel
from cni_bridge.plugins.loopback import PLUGIN
env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0"}
conf = b'{"cniVersion": "1.1.0", "name": "lo-net", "type": "loopback"}'
code, out = skel.dispatch(PLUGIN, env, conf)
for command in ("CHECK", "DEL"):
    code2, _ = skel.dispatch(PLUGIN, {**env, "CNI_COMMAND": command}, conf)
    assert code2 == 0, (command, _)
print(repr((code, out.decode(), sorted(before), sorted(sys.modules))))
"""


def _run_child(prefix: list[str], source: str, *args: str):
    env = {"PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([*prefix, sys.executable, "-S", "-c", source, *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code, out, before, after = ast.literal_eval(proc.stdout)
    return code, out, set(before), set(after)


@pytest.fixture(scope="module")
def host_local_child(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("imports") / "data"
    return _run_child([], HOST_LOCAL_CHILD, str(data_dir))


@pytest.fixture(scope="module")
def loopback_child():
    unshare = shutil.which("unshare")
    private_netns = [unshare, "--user", "--map-root-user", "--net"] if unshare else None
    if not private_netns or subprocess.run([*private_netns, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --user --map-root-user --net` (util-linux, user namespaces enabled)")
    return _run_child(private_netns, LOOPBACK_CHILD)


@pytest.fixture(params=list(FORBIDDEN))
def child(request):
    """(plugin, (exit code, stdout, modules before, modules after)) for each plugin."""
    return request.param, request.getfixturevalue(request.param.replace("-", "_") + "_child")


def test_host_local_add_worked(host_local_child):
    code, out, _, _ = host_local_child
    assert code == 0 and '"10.0.0.9/24"' in out and '"fd00::2/64"' in out


def test_loopback_add_worked(loopback_child):
    code, out, _, _ = loopback_child
    assert code == 0 and '"127.0.0.1/8"' in out and '"sandbox": "/proc/self/ns/net"' in out


def _loaded(modules: set[str], module: str) -> list[str]:
    return [m for m in modules if m == module or m.startswith(module + ".")]


def test_the_check_would_see_a_forbidden_import(child):
    plugin, (_, _, before, _) = child
    watched = FORBIDDEN[plugin] + PYROUTE2_BAGGAGE
    assert not [m for m in watched if _loaded(before, m)], "the interpreter preloads a module this test watches"


@pytest.mark.parametrize("plugin, module", [(p, m) for p, modules in FORBIDDEN.items() for m in modules])
def test_not_imported(plugin, module, request):
    _, _, _, after = request.getfixturevalue(plugin.replace("-", "_") + "_child")
    assert not _loaded(after, module)


@pytest.mark.parametrize("module", PYROUTE2_BAGGAGE)
def test_loopback_loads_no_pyroute2_baggage(loopback_child, module):
    _, _, _, after = loopback_child
    if _loaded(after, "pyroute2"):
        pytest.skip("netlink still goes through pyroute2's message classes, which load it")
    assert not _loaded(after, module)


def test_only_the_rust_core_of_pydantic_core(child):
    _, (_, _, _, after) = child
    assert "pydantic_core._pydantic_core" in after
    assert "pydantic_core" not in after, "pydantic_core/__init__.py was run"
