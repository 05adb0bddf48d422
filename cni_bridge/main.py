"""The executable's entry: one multi-call program that acts as the plugin it is named after.

build/bin/bridge and build/bin/host-local point at one executable; argv[0] picks the plugin.
Installed side by side under other names (cnib-bridge, py-host-local, ...), the suffix decides.
"""

import os
import sys


def main() -> None:
    name = os.path.basename(sys.argv[0])
    if name.endswith("host-local"):
        from ipam.host_local import PLUGIN
    elif name.endswith("bridge"):
        from cni_bridge.bridge import PLUGIN
    else:
        sys.stderr.write(f"cni-bridge: run me as 'bridge' or 'host-local', not {name!r}\n")
        sys.stdout.flush()
        os._exit(2)
    from cni_bridge.skel import run

    run(PLUGIN)
