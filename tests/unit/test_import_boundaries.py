"""host-local starts on every pod: importing it and running ADD must not load what it
does not need, and neither must decoding and validating any plugin's config. Checked in a
fresh interpreter started without site (as the frozen build runs), so that nothing the
environment preloads hides an import of ours."""

import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ["pyroute2", "nftables", "pydantic", "pydantic_core", "json", "re", "typing", "ipaddress", "subprocess", "asyncio",
             "cni_bridge.plugins.bridge", "cni_bridge.kernel.netlink", "cni_bridge.nft.table", "cni_bridge.kernel.netns",
             "cni_bridge.models", "cni_bridge.schemagen"]

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
# Every model's config, decoded and validated the way each plugin does it, once valid and
# once broken (the error paths format messages).
from cni_bridge import _schemas
from cni_bridge.cni.errors import CNIError
from cni_bridge.cni.schema import validate_conf
for name in [n for n in dir(_schemas) if n.isupper()]:
    for stdin in (conf, '{"name": "n", "type": 1, "mtu": 1e999}', '{"name": "n", "type": 1, "ipam": []}'):
        try:
            validate_conf(getattr(_schemas, name), skel.load_cmd_args("ADD", env, stdin.encode()).conf)
        except CNIError:
            pass
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
