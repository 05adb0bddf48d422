"""The executable's entry: one multi-call program that acts as the plugin it is named after.

build/bin/bridge, build/bin/host-local, ... all point at one executable; argv[0] picks the
plugin. Installed side by side under other names (cnib-bridge, py-host-local, ...), the
suffix decides. PLUGINS is the one list of what we ship: the build spec, scripts/build,
scripts/install and the tests all read it.
"""

import os
import sys

# plugin name -> the module whose PLUGIN it runs
PLUGINS = {
    "bridge": "cni_bridge.plugins.bridge",
    "host-local": "ipam.host_local",
    "loopback": "cni_bridge.plugins.loopback",
}
IPAM_PLUGINS = {"host-local"}  # the rest are main or meta plugins: never an IPAM type


def plugin_for(program: str) -> str | None:
    """The plugin a program name stands for: its own name, or the longest plugin name it ends with."""
    matches = [name for name in PLUGINS if program == name or program.endswith("-" + name)]
    return max(matches, key=len) if matches else None


def main() -> None:
    program = os.path.basename(sys.argv[0])
    name = plugin_for(program)
    if name is None:
        sys.stderr.write(f"cni-bridge: run me as one of {', '.join(PLUGINS)}, not {program!r}\n")
        sys.stdout.flush()
        os._exit(2)
    module = __import__(PLUGINS[name], fromlist=["PLUGIN"])
    from cni_bridge.cni.skel import run

    run(module.PLUGIN)
