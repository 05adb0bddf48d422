"""The executable's entry: one multi-call program that acts as the plugin it is named after.

build/bin/bridge, build/bin/host-local, ... all point at one executable; argv[0] picks the
plugin. Installed side by side under other names (cnib-bridge, py-host-local, ...), the
suffix decides. PLUGINS is the one list of what we ship: the build spec, scripts/build,
scripts/install and the tests all read it.

Named exactly `cni-bridge` (build/bin/cni-bridge, the executable itself, the link on the
PATH), it is the command, a runtime for use by hand (cni_bridge/cli). That name is checked
first, since it ends with "-bridge"; a plugin's exec never imports the command's modules.
"""

import os
import sys
from time import monotonic_ns

COMMAND = "cni-bridge"  # not a plugin, so not in PLUGINS
# Set to a file name, the plugin appends when its phases ended (CLOCK_MONOTONIC ns):
# scripts/bench --profile reads them.
PROFILE_VARIABLE = "CNI_BRIDGE_PROFILE"

# plugin name -> the module whose PLUGIN it runs
PLUGINS = {
    "bridge": "cni_bridge.plugins.bridge",
    "host-local": "ipam.host_local",
    "loopback": "cni_bridge.plugins.loopback",
    "portmap": "cni_bridge.plugins.portmap",
}
IPAM_PLUGINS = {"host-local"}  # the rest are main or meta plugins: never an IPAM type


def plugin_for(program: str) -> str | None:
    """The plugin a program name stands for: its own name, or the longest plugin name it ends with."""
    matches = [name for name in PLUGINS if program == name or program.endswith("-" + name)]
    return max(matches, key=len) if matches else None


def main() -> None:
    marks = [("started", monotonic_ns())] if PROFILE_VARIABLE in os.environ else None
    program = os.path.basename(sys.argv[0])
    if program == COMMAND:
        from cni_bridge.cli.command import main as command_main

        code = command_main(sys.argv[1:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    name = plugin_for(program)
    if name is None:
        sys.stderr.write(
            f"cni-bridge: run me as one of {', '.join(PLUGINS)}, not {program!r} (or as {COMMAND}, the command)\n"
        )
        sys.stdout.flush()
        os._exit(2)
    module = __import__(PLUGINS[name], fromlist=["PLUGIN"])
    from cni_bridge.cni.skel import run

    if marks is not None:
        marks.append(("imported", monotonic_ns()))
    run(module.PLUGIN, marks)
