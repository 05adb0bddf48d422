"""What we ship: the one list of our plugins, which the executable's entry (main.py), the
build spec, scripts/build, scripts/install and the tests all read. It imports nothing, so
any python3 can read it, venv or not, and every module may import it.
"""

COMMAND = "cni-bridge"  # the command, a runtime for use by hand: not a plugin, so not in PLUGINS
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
