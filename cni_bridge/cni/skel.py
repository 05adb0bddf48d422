"""The protocol boundary every plugin of ours shares: environment and stdin in, result or
error JSON out.

`dispatch` is pure (environment and stdin as arguments, exit code and stdout as return
values) so that unit tests drive every path without a process. `run` is the executable's
wrapper around it. Nothing here touches the kernel; plugins do, in their command functions.
"""

import os
import sys

from cni_bridge.cni import errors, names, version, wire
from cni_bridge.cni.cniargs import parse_cni_args
from cni_bridge.cni.errors import CNIError

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# SPEC.md section 2: what each command requires. CNI_PATH is optional to us (the spec says
# so; the reference's skel insists) until a plugin needs it to find a delegate.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
}
# The first version whose spec has the command.
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


class CmdArgs:
    """One invocation: the environment and the decoded config, validated for the protocol."""

    __slots__ = (
        "command", "container_id", "netns", "ifname", "args", "path", "environ",
        "stdin", "conf", "cni_version", "network_name",
    )

    def __init__(self, command, container_id, netns, ifname, args, path, environ, stdin, conf, cni_version, network_name):
        self.command = command
        self.container_id: str = container_id
        self.netns: str = netns
        self.ifname: str = ifname
        self.args: dict[str, str] = args  # the known keys of CNI_ARGS
        self.path: list[str] = path  # CNI_PATH, split
        self.environ: dict[str, str] = environ
        self.stdin: bytes = stdin  # the config as received, for delegates
        self.conf: dict = conf  # the decoded config; plugins validate their own fields
        self.cni_version: str = cni_version
        self.network_name: str = network_name

    def prev_result(self) -> dict | None:
        """The config's prevResult in the 1.1 shape, or None when the runtime sent none."""
        prev = self.conf.get("prevResult")
        return version.upgrade_result(prev, self.cni_version) if prev else None

    def prev_result_if_usable(self) -> dict | None:
        """prevResult for a DEL, which must clean up without it: None when there is none or
        when it is malformed (said on stderr), so that a prevResult ADD took without reading
        it cannot keep DEL from finding the attachment by other means."""
        try:
            return self.prev_result()
        except CNIError as err:
            log(f"{self.command}: {err}; going without prevResult")
            return None


def valid_attachments(conf: dict) -> set[tuple[str, str]] | None:
    """GC's (container id, ifname) pairs; libcni sends both spellings (the 1.1.0 spec text
    had the second). None when the config carries neither."""
    attachments = conf.get("cni.dev/valid-attachments")
    if attachments is None:
        attachments = conf.get("cni.dev/attachments")
    if attachments is None:
        return None
    return {(a["containerID"], a["ifname"]) for a in attachments}


def _nothing_to_do(cmd_args: "CmdArgs") -> None:
    return None


class Plugin:
    """A plugin: its command functions. ADD returns a 1.1-shaped result; the others None.

    CHECK, GC and STATUS are optional: a plugin without state to check, collect or report
    succeeds at them, as the spec allows.
    """

    def __init__(self, about, add, delete, check=_nothing_to_do, gc=_nothing_to_do, status=_nothing_to_do):
        self.about = about
        self.functions = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


def log(message: str) -> None:
    """Logs go to stderr; stdout carries only the result or the error JSON."""
    sys.stderr.write(f"{message}\n")


def dispatch(plugin: Plugin, environ, stdin: bytes) -> tuple[int, bytes]:
    """Run one command; return (exit code, stdout bytes)."""
    command = environ.get("CNI_COMMAND", "")
    if not command:
        log(f"{plugin.about}\nCNI protocol versions supported: {', '.join(version.SUPPORTED_VERSIONS)}")
        return 0, b""
    if command == "VERSION":
        info = {"cniVersion": version.CURRENT_VERSION, "supportedVersions": list(version.SUPPORTED_VERSIONS)}
        return 0, wire.dumps(info)

    cni_version = version.CURRENT_VERSION  # what an error is reported in until the config says
    try:
        cmd_args = load_cmd_args(command, environ, stdin)
        cni_version = cmd_args.cni_version
        result = plugin.functions[command](cmd_args)
        if command == "ADD":
            return 0, wire.dumps(version.convert_result(result, cni_version), indent=4)
        return 0, b""
    except CNIError as err:
        return 1, wire.dumps(err.to_dict(cni_version), indent=4)
    except Exception as err:  # a bug or an unexpected failure: still the spec's error shape
        where = err.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        location = f" at {where.tb_frame.f_code.co_filename}:{where.tb_lineno}" if where else ""
        log(f"internal error{location}: {err!r}")
        internal = CNIError(errors.INTERNAL, f"internal error: {type(err).__name__}", str(err))
        return 1, wire.dumps(internal.to_dict(cni_version), indent=4)


def load_cmd_args(command: str, environ, stdin: bytes) -> CmdArgs:
    """Validate the environment and the config's protocol fields; raise CNIError.

    Every variable we read is checked before any plugin code runs, so that nothing a
    plugin writes (a lease, an nft comment, a log line) can hold bytes that are not text.
    """
    if command not in COMMANDS:
        raise CNIError(errors.INVALID_ENVIRONMENT, "unknown CNI_COMMAND",
                       f"{names.shown(command)} is not one of {', '.join(COMMANDS)}")
    missing = [key for key in REQUIRED_ENV[command] if not environ.get(key)]
    if missing:
        raise CNIError(errors.INVALID_ENVIRONMENT, f"required env variables {missing} missing")
    container_id = environ.get("CNI_CONTAINERID", "")
    if container_id:
        names.check_container_id(container_id)
    ifname = environ.get("CNI_IFNAME", "")
    if ifname:
        names.check_interface_name(ifname)
    netns = names.check_environment_text("CNI_NETNS", environ.get("CNI_NETNS", ""), names.MAX_PATH_LENGTH)
    path = names.check_cni_path(environ.get("CNI_PATH", ""))
    raw_args = names.check_environment_text("CNI_ARGS", environ.get("CNI_ARGS", ""), names.MAX_CNI_ARGS_LENGTH)
    cni_args = parse_cni_args(raw_args)

    try:
        conf = wire.loads(stdin)
    except ValueError as err:
        raise CNIError(errors.DECODE_FAILURE, "failed to decode network config", str(err)) from None
    if not isinstance(conf, dict):
        raise CNIError(errors.DECODE_FAILURE, "failed to decode network config", "not a JSON object")
    cni_version = version.check_version(conf.get("cniVersion") or version.DEFAULT_VERSION)
    minimum = MIN_VERSION.get(command)
    if minimum and not version.at_least(cni_version, minimum):
        raise CNIError(
            errors.INCOMPATIBLE_VERSION,
            f"config version does not allow {command}",
            f"config is {cni_version!r}, {command} needs {minimum} or later",
        )
    network_name = names.check_network_name(conf.get("name"))
    return CmdArgs(
        command, container_id, netns, ifname, cni_args, path,
        environ, stdin, conf, cni_version, network_name,
    )


def run(plugin: Plugin, marks: list | None = None) -> None:
    """The executable's main: read stdin, dispatch, write stdout, exit without teardown.

    marks, when main.py was asked to profile: (phase, monotonic ns) pairs to add to.
    """
    command = os.environ.get("CNI_COMMAND", "")
    stdin = b""
    if command and command != "VERSION":
        try:
            stdin = sys.stdin.buffer.read()
        except OSError as err:
            out = wire.dumps(CNIError(errors.IO_FAILURE, "failed to read stdin", str(err)).to_dict(version.CURRENT_VERSION))
            _exit(1, out, marks)
    code, out = dispatch(plugin, os.environ, stdin)
    if marks is not None:
        from time import monotonic_ns

        marks.append(("done", monotonic_ns()))
    _exit(code, out, marks)


def _exit(code: int, out: bytes, marks: list | None = None) -> None:
    if out:
        sys.stdout.buffer.write(out + b"\n")
    sys.stdout.flush()
    sys.stderr.flush()
    if marks is not None:
        _write_marks(marks)
    # Skip interpreter teardown: the kernel closes our sockets and files.
    os._exit(code)


def _write_marks(marks: list) -> None:
    from time import monotonic_ns

    from cni_bridge.suite import PROFILE_VARIABLE

    marks.append(("written", monotonic_ns()))
    line = " ".join(f"{phase}={ns}" for phase, ns in marks) + "\n"
    fd = os.open(os.environ[PROFILE_VARIABLE], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
