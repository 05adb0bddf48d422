"""host-local starts on every pod: importing it and running ADD must not load what it
does not need. Checked in a fresh interpreter started without site (as the frozen build
runs), so that nothing the environment preloads hides an import of ours."""

import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ["pyroute2", "nftables", "pydantic", "json", "re", "ipaddress", "subprocess", "asyncio", "cni_bridge.plugins.bridge",
             "cni_bridge.kernel.netlink", "cni_bridge.nft.table", "cni_bridge.kernel.netns", "cni_bridge.models",
             "cni_bridge.cli", "argparse"]

CHILD = r"""
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


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("imports") / "data"
    env = {"PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-S", "-c", CHILD, str(data_dir)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code, out, before, after = ast.literal_eval(proc.stdout)
    return code, out, set(before), set(after)


def test_add_worked(child):
    code, out, _, _ = child
    assert code == 0 and '"10.0.0.9/24"' in out and '"fd00::2/64"' in out


def test_the_check_would_see_a_forbidden_import(child):
    _, _, before, _ = child
    assert not [m for m in FORBIDDEN if m in before], "the interpreter preloads a module this test watches"


@pytest.mark.parametrize("module", FORBIDDEN)
def test_not_imported(child, module):
    _, _, _, after = child
    assert not [m for m in after if m == module or m.startswith(module + ".")]


def test_only_the_rust_core_of_pydantic_core(child):
    _, _, _, after = child
    assert "pydantic_core._pydantic_core" in after
    assert "pydantic_core" not in after, "pydantic_core/__init__.py was run"


def test_plugins_never_import_the_command():
    """The cni-bridge command (cni_bridge/cli) shares the executable; a plugin's exec path
    (main, skel, the bridge, host-local) must not load it."""
    code = ("import sys; import cni_bridge.main, cni_bridge.cni.skel, cni_bridge.plugins.bridge, ipam.host_local; "
            "print([m for m in sys.modules if m.startswith('cni_bridge.cli') or m == 'argparse'])")
    env = {"PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
