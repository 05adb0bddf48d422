"""Running another plugin from CNI_PATH (SPEC.md section 4): IPAM types we do not ship.

The delegate gets the same stdin and environment we got, with CNI_COMMAND set to the
command we need; its stderr goes to ours. subprocess is imported here only, so only the
configs that name a foreign IPAM type pay for it.

A delegate may itself be one of ours again (through a foreign plugin that runs its own
delegate, or a config that names the wrong type): the environment carries how deep the
delegation is, and we refuse to go further than one level.
"""

import os
import sys

from cni_bridge.cni import version, wire
from cni_bridge.cni.errors import CNIError, DECODE_FAILURE, INTERNAL, INVALID_CONFIG
from cni_bridge.suite import IPAM_PLUGINS, plugin_for

DEPTH_VARIABLE = "CNI_BRIDGE_DELEGATION_DEPTH"
MAX_DEPTH = 1


def check_ipam_type(name: str) -> None:
    """An IPAM type that names one of our main or meta plugins would run that plugin as its
    own IPAM (a bridge exec'ing a bridge, without end): refuse it."""
    ours = plugin_for(name)
    if ours is not None and ours not in IPAM_PLUGINS:
        raise CNIError(INVALID_CONFIG, "invalid IPAM type", f"{name!r} is a {ours} plugin, not an IPAM plugin")


def find_plugin(name: str, path: list[str]) -> str | None:
    """The first executable called `name` in the CNI_PATH directories."""
    if not name or "/" in name:
        raise CNIError(INVALID_CONFIG, "invalid plugin type", f"{name!r} must be a file name")
    for directory in path:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def exec_plugin(executable: str, command: str, cmd_args) -> dict | None:
    """Run `executable` for `command`; return its result (1.1 shape) for ADD, else None.

    A delegate's error JSON becomes our CNIError with its code, so the runtime sees it as is.
    """
    import subprocess

    depth = _depth(cmd_args.environ)
    if depth >= MAX_DEPTH:
        raise CNIError(INVALID_CONFIG, f"refusing to run {os.path.basename(executable)}",
                       f"we were started as a delegate ({DEPTH_VARIABLE}={depth}); delegates do not nest")
    env = child_environment(cmd_args.environ)
    env["CNI_COMMAND"] = command
    env[DEPTH_VARIABLE] = str(depth + 1)
    try:
        proc = subprocess.run([executable], input=cmd_args.stdin, env=env, stdout=subprocess.PIPE)
    except OSError as err:
        raise CNIError(INTERNAL, f"cannot run {executable}", str(err)) from None
    output = proc.stdout.strip()
    if proc.returncode != 0:
        try:
            error = wire.loads(output)
            raise CNIError(int(error["code"]), str(error.get("msg", "")), str(error.get("details", "")))
        except (ValueError, KeyError, TypeError):
            raise CNIError(
                INTERNAL, f"{os.path.basename(executable)} {command} failed (exit {proc.returncode})", output.decode(errors="replace")
            ) from None
    if command != "ADD":
        return None
    try:
        result = wire.loads(output)
    except ValueError as err:
        raise CNIError(DECODE_FAILURE, f"cannot decode the result of {executable}", str(err)) from None
    return version.upgrade_result(result, cmd_args.cni_version)


def _depth(environ) -> int:
    value = environ.get(DEPTH_VARIABLE, "0")
    return int(value) if value.isdigit() else MAX_DEPTH  # a mangled marker: do not delegate


def child_environment(environ) -> dict:
    """Our environment as the runtime set it. A frozen build's launcher points
    LD_LIBRARY_PATH at our bundled libraries (and keeps the runtime's value in
    LD_LIBRARY_PATH_ORIG); a delegate must load its own."""
    env = dict(environ)
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    for key in [k for k in env if k.startswith("_PYI_")]:
        del env[key]
    return env
