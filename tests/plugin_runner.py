"""Running plugin executables the way a runtime does, for the e2e tier and conftest.

Import it as `plugin_runner` (tests/ is on sys.path through tests/conftest.py). It is a
module of its own because `from conftest import ...` is ambiguous once tests/privileged's
conftest is loaded too.

The plugin executables are $CNI_BRIDGE_BIN/<name> if that is set, else build/bin/<name>
if scripts/build has run since the sources last changed, else shell wrappers around the
source tree (so the tiers run before a build). CNI_BRIDGE_BIN=source forces the wrappers.
This is the one place that decides; every tier's fixtures ask it.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from cni_bridge.suite import COMMAND, PLUGINS

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
REFERENCE_HOST_LOCAL = Path("/usr/lib/cni/host-local")


def built_bin_dir() -> Path | None:
    """Where built executables are, or None to use the source-tree wrappers.

    build/bin counts only when it is newer than every source file: an old build would
    test yesterday's code (a warning says so, so that scripts/build is not forgotten).
    """
    chosen = os.environ.get("CNI_BRIDGE_BIN")
    if chosen == "source":
        return None
    if chosen:
        return Path(chosen)
    exe = ROOT / "build" / "bin" / ".cni-bridge" / "cni-bridge"
    if not exe.exists():
        return None
    if exe.stat().st_mtime < _newest_source_mtime():
        warnings.warn("build/bin is older than the sources: testing the source tree (run scripts/build)")
        return None
    return ROOT / "build" / "bin"


def _newest_source_mtime() -> float:
    return max(path.stat().st_mtime for package in ("cni_bridge", "ipam") for path in (ROOT / package).rglob("*.py"))


def plugin_bin_dir(scratch: Path) -> Path:
    """A directory with every plugin we ship: built ones, or wrappers written into scratch."""
    return built_bin_dir() or write_wrappers(scratch)


def write_wrappers(directory: Path) -> Path:
    """A shell script per plugin (bridge, host-local, ...) and for the cni-bridge command
    that runs cni_bridge.main from the tree (argv[0] is the script's path, as for a link)."""
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    for name in [*PLUGINS, COMMAND]:
        script = directory / name
        script.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH='{ROOT}' exec '{python}' -P -c "
            f"'import sys; sys.argv[0] = \"{script}\"; from cni_bridge.main import main; main()' \"$@\"\n"
        )
        script.chmod(0o755)
    return directory


class PluginRun:
    """The outcome of one exec: exit code, stdout parsed as JSON (None when empty), stderr,
    and stdout as bytes. Unpacks as (code, out, err)."""

    def __init__(self, code: int, out, err: str, raw: bytes):
        self.code, self.out, self.err, self.raw = code, out, err, raw

    def __iter__(self):
        return iter((self.code, self.out, self.err))

    def __repr__(self) -> str:
        return f"PluginRun(code={self.code}, out={self.out!r}, err={self.err!r})"


def cni_env(command, container_id="ctr1", ifname="eth0", netns="/var/run/netns/test", args=None, **extra) -> dict:
    """The process environment for one command: ours without CNI_*, plus these (None drops one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    values = {
        "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname,
        "CNI_NETNS": netns, "CNI_PATH": "/nonexistent", "CNI_ARGS": args, **extra,
    }
    env.update({k: v for k, v in values.items() if v is not None})
    return env


def start_plugin(executable, command, conf=b"", **env_kw) -> subprocess.Popen:
    """Start one exec without waiting (for many at once); finish it with finish_plugin."""
    stdin = conf if isinstance(conf, (bytes, str)) else json.dumps(conf)
    proc = subprocess.Popen(
        [str(executable)], env=cni_env(command, **env_kw),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.cni_stdin = stdin.encode() if isinstance(stdin, str) else stdin
    return proc


def finish_plugin(proc: subprocess.Popen) -> PluginRun:
    # The timeout only keeps a hung plugin from hanging the suite; nothing asserts speed.
    out, err = proc.communicate(proc.cni_stdin, timeout=300)
    parsed = json.loads(out) if out.strip() else None
    return PluginRun(proc.returncode, parsed, err.decode(errors="replace"), out)


def exec_plugin(executable, command, conf=b"", **env_kw) -> PluginRun:
    """Run `executable` as a runtime would: exec_plugin(path, "ADD", conf_dict, container_id=...)."""
    return finish_plugin(start_plugin(executable, command, conf, **env_kw))


def host_local_conf(data_dir, ranges=None, cni_version="1.1.0", name="testnet", ipam=None, **top) -> dict:
    """A network config whose ipam is host-local with its leases under data_dir.
    ranges: range sets of subnet strings or Range dicts."""
    section = {"type": "host-local", "dataDir": str(data_dir)}
    if ranges is not None:
        section["ranges"] = [[{"subnet": r} if isinstance(r, str) else r for r in rs] for rs in ranges]
    section.update(ipam or {})
    conf = {"cniVersion": cni_version, "name": name, "type": "bridge", "ipam": section}
    conf.update(top)
    return conf


def lease_files(directory) -> dict[str, str]:
    """{file name: content} of a network's lease directory, lock and round-robin hints excluded."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return {
        p.name: p.read_bytes().decode()
        for p in directory.iterdir()
        if p.name != "lock" and not p.name.startswith("last_reserved_ip.")
    }
