"""The executable's entry: one multi-call program that acts as the plugin it is named after.

build/bin/bridge, build/bin/host-local, ... all point at one executable; argv[0] picks the
plugin (cni_bridge/suite.py lists them). Installed side by side under other names
(cnib-bridge, py-host-local, ...), the suffix decides.

Named exactly `cni-bridge` (build/bin/cni-bridge, the executable itself, the link on the
PATH), it is the command, a runtime for use by hand (cni_bridge/cli). That name is checked
first, since it ends with "-bridge"; a plugin's exec never imports the command's modules.
"""

import os
import sys
from time import monotonic_ns

from cni_bridge.suite import COMMAND, PLUGINS, PROFILE_VARIABLE, plugin_for


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
