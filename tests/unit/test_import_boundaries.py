"""Every pod start pays for what a plugin imports: each plugin's ADD, CHECK and DEL must
not load what it does not need. Each runs in a fresh interpreter started without site (as
the frozen build runs), so that nothing the environment preloads hides an import of ours,
and the modules it loaded are compared with what is forbidden to it.

loopback, bridge and portmap need network namespaces: their children run under `unshare
--user --map-root-user --net`, in namespaces of their own that end with them (no root
needed). The bridge's container is a second namespace held by a `sleep` the child starts
and stops; portmap's gets a link that routes to its container's address.
"""

import ast
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Never wanted on any plugin's path: the build-time and test-time tools, and the standard
# library modules that cost milliseconds to import and that our code has cheaper ways round.
ALWAYS_FORBIDDEN = [
    "pydantic", "pydantic_core", "pyroute2", "nftables", "cni_bridge.models", "cni_bridge.schemagen",
    "cni_bridge.cli", "argparse", "json", "re", "typing", "logging", "multiprocessing", "platform", "ipaddress",
    "asyncio", "pathlib", "socket", "subprocess", "dataclasses", "enum",
]
FORBIDDEN = {
    "host-local": [*ALWAYS_FORBIDDEN, "cni_bridge.kernel", "cni_bridge.nft", "cni_bridge.plugins", "ctypes"],
    "loopback": [*ALWAYS_FORBIDDEN, "ipam", "cni_bridge.nft", "cni_bridge.plugins.bridge"],
    # ctypes: setns (Python 3.11 has no os.setns); hashlib only for overlong names
    "bridge": [*ALWAYS_FORBIDDEN, "cni_bridge.plugins.loopback", "hashlib"],
    # a bridge that asks for no masquerade and no MAC spoof check never loads nftables
    "bridge without ipMasq": [*ALWAYS_FORBIDDEN, "cni_bridge.plugins.loopback", "hashlib", "cni_bridge.nft",
                              "cni_bridge.kernel.nfnl", "cni_bridge.plugins.bridge_firewall"],
    # hashlib only for conditions (which this config has none of)
    "portmap": [*ALWAYS_FORBIDDEN, "ipam", "cni_bridge.plugins.bridge", "cni_bridge.plugins.bridge_firewall",
                "cni_bridge.plugins.loopback", "cni_bridge.nft.masq", "cni_bridge.nft.spoof", "hashlib"],
}

_COMMANDS = r"""
import sys
before = set(sys.modules)
from cni_bridge.cni import skel
from cni_bridge.suite import PLUGINS
PLUGIN = __import__(PLUGINS[sys.argv[1]], fromlist=["PLUGIN"]).PLUGIN
env = {"CNI_CONTAINERID": "c1", "CNI_NETNS": sys.argv[2], "CNI_IFNAME": "eth0",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p", "CNI_PATH": "/nonexistent"}
conf = sys.argv[3].encode()
code, out = skel.dispatch(PLUGIN, {**env, "CNI_COMMAND": "ADD"}, conf)
assert code == 0, out
prev = out.decode().replace("\n", " ")
checked = conf[:-1] + b', "prevResult": ' + out + b"}"
for command in ("CHECK", "DEL", "DEL"):
    code2, out2 = skel.dispatch(PLUGIN, {**env, "CNI_COMMAND": command}, checked)
    assert code2 == 0, (command, out2)
# Every model's config, decoded and validated the way each plugin does it, broken (the
# error paths format messages).
from cni_bridge import _schemas
from cni_bridge.cni.errors import CNIError
from cni_bridge.cni.schema import validate_conf
for name in [n for n in dir(_schemas) if n.isupper()]:
    for stdin in (b'{"name": "n", "type": 1, "mtu": 1e999}', b'{"name": "n", "type": 1, "ipam": []}', b"{nope"):
        try:
            validate_conf(getattr(_schemas, name), skel.load_cmd_args("ADD", {**env, "CNI_COMMAND": "ADD"}, stdin).conf)
        except CNIError:
            pass
print(repr((code, out.decode(), sorted(before), sorted(sys.modules))))
"""

# The bridge's "container": a namespace held by a process of ours, for the child's duration.
_WITH_CONTAINER = r"""
unshare --net sleep 60 &
holder=$!
trap 'kill $holder' EXIT
while [ "$(readlink /proc/$holder/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.01; done
ip link set lo up
"$@" "/proc/$holder/ns/net" "$CONF"
"""

# portmap's "node": a link that holds the route to the container's address (route_localnet
# is set on it), in the child's own namespace.
_WITH_ROUTE = r"""
ip link set lo up
ip link add ib0 type bridge
ip addr add 10.0.0.1/24 dev ib0
ip link set ib0 up
"$@" /nonexistent "$CONF"
"""


def _conf(case: str, data_dir: Path) -> str:
    ipam = ('{"type": "host-local", "dataDir": "%s", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]], '
            '"routes": [{"dst": "0.0.0.0/0"}]}') % data_dir
    if case == "host-local":
        return '{"cniVersion": "1.1.0", "name": "net1", "type": "host-local", "ipam": %s}' % ipam
    if case == "loopback":
        return '{"cniVersion": "1.1.0", "name": "lo-net", "type": "loopback"}'
    if case == "portmap":
        prev = ('{"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}], "ips": '
                '[{"address": "10.0.0.2/24", "interface": 0}, {"address": "fd00::2/64", "interface": 0}]}')
        mappings = '[{"hostPort": 8080, "containerPort": 80}, {"hostPort": 53, "containerPort": 53, "protocol": "udp"}]'
        return ('{"cniVersion": "1.1.0", "name": "net1", "type": "portmap", "runtimeConfig": {"portMappings": %s}, '
                '"prevResult": %s}') % (mappings, prev)
    masq = "false" if case == "bridge without ipMasq" else "true"
    return ('{"cniVersion": "1.1.0", "name": "net1", "type": "bridge", "bridge": "ib0", "isGateway": true, '
            '"ipMasq": %s, "hairpinMode": true, "ipam": %s}') % (masq, ipam)


def _private_namespaces() -> list[str]:
    unshare = shutil.which("unshare")
    prefix = [unshare, "--user", "--map-root-user", "--net"] if unshare else []
    if not prefix or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --user --map-root-user --net` (util-linux, user namespaces enabled)")
    return prefix


@pytest.fixture(scope="module", params=list(FORBIDDEN))
def child(request, tmp_path_factory):
    """(case, exit code, ADD's stdout, modules before, modules after) for each case."""
    case = request.param
    plugin = case.split()[0]
    conf = _conf(case, tmp_path_factory.mktemp("imports") / "data")
    python = [sys.executable, "-S", "-c", _COMMANDS, plugin]
    env = {"PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "CONF": conf}
    if plugin == "host-local":
        cmd = [*python, "/x", conf]
    elif plugin == "loopback":
        cmd = [*_private_namespaces(), *python, "/proc/self/ns/net", conf]
    elif plugin == "portmap":
        cmd = [*_private_namespaces(), "sh", "-c", _WITH_ROUTE, "sh", *python]
    else:
        cmd = [*_private_namespaces(), "sh", "-c", _WITH_CONTAINER, "sh", *python]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    code, out, before, after = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    return case, code, out, set(before), set(after)


def _loaded(modules: set[str], module: str) -> list[str]:
    return sorted(m for m in modules if m == module or m.startswith(module + "."))


def test_the_commands_worked(child):
    plugin, code, out, _, _ = child
    expected = '"127.0.0.1/8"' if plugin == "loopback" else '"10.0.0.2/24"'
    assert code == 0 and expected in out


def test_the_check_would_see_a_forbidden_import(child):
    plugin, _, _, before, _ = child
    assert not [m for m in FORBIDDEN[plugin] if _loaded(before, m)], "the interpreter preloads a watched module"


def test_nothing_forbidden_is_imported(child):
    plugin, _, _, before, after = child
    loaded = {module: _loaded(after, module) for module in FORBIDDEN[plugin]}
    assert not {m: found for m, found in loaded.items() if found}, (
        f"{plugin} imported what it must not; everything it loaded: {sorted(after - before)}")


def test_the_check_sees_an_import(child):
    """The children do report what they load: our own plugin module is among it."""
    plugin, _, _, _, after = child
    assert {"host-local": "ipam.host_local", "loopback": "cni_bridge.plugins.loopback",
            "bridge": "cni_bridge.plugins.bridge", "portmap": "cni_bridge.plugins.portmap"}[plugin.split()[0]] in after
