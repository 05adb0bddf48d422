"""`cni-bridge`: attach, inspect and detach containers by hand, as a CNI runtime would.

    cni-bridge add    NETWORK TARGET [--ifname IF] [--id ID] [-p [IP:]HOST:CONTAINER[/PROTO]]...
                                     [--ip ADDR]... [--mac MAC] [--args K=V;K=V]
    cni-bridge del    NETWORK TARGET [--ifname IF] [--id ID]
    cni-bridge check  NETWORK TARGET [--ifname IF] [--id ID]
    cni-bridge gc     NETWORK
    cni-bridge status NETWORK
    cni-bridge ls     [NETWORK] [--json]

The libcni behaviour is in runtime.py; this module reads the command line, resolves
targets, and prints.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys

from cni_bridge.cli import runtime as rt_mod
from cni_bridge.cli.runtime import (
    ConfigError, InvalidArgument, NetworkList, PluginError, Runtime, RuntimeConf, RuntimeFailure,
)

PROGRAM = "cni-bridge"
NETNS_DIRS = ("/run/netns", "/var/run/netns")

EXIT_OK = 0
EXIT_PLUGIN = 1  # a plugin reported an error
EXIT_USAGE = 2  # bad command line or argument
EXIT_CONFIG = 3  # network config missing or invalid; plugin missing or wrong cniVersion
EXIT_TARGET = 4  # no such netns, docker container or process

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  success
  {EXIT_PLUGIN}  a plugin failed (its type, error code and message are printed)
  {EXIT_USAGE}  bad command line or argument
  {EXIT_CONFIG}  network config not found or invalid, plugin not found, or a plugin does
     not support the config's cniVersion
  {EXIT_TARGET}  the target (netns, docker container, pid) cannot be found"""

TARGET_SHORT = "TARGET: a netns path or name under /run/netns, docker:NAME, or pid:N."
TARGET_HELP = """TARGET is a netns path (/run/netns/x, /proc/PID/ns/net), a name under /run/netns,
docker:NAME (the container's SandboxKey; docker must know it) or pid:N. The container id
defaults to the docker container id, the netns name, or pid-N; for del and check, to the
id cached for that netns, and TARGET may also be a cached container id (or its prefix)."""


class TargetError(RuntimeFailure):
    exit_code = EXIT_TARGET


# ---- colour ------------------------------------------------------------------------------


class Style:
    """ANSI colour on a terminal only (and never with NO_COLOR set)."""

    def __init__(self, stream):
        self.on = hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR") \
            and os.environ.get("TERM") != "dumb"

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text

    def red(self, text):
        return self(text, "31")

    def green(self, text):
        return self(text, "32")

    def yellow(self, text):
        return self(text, "33")

    def bold(self, text):
        return self(text, "1")


# ---- the command line --------------------------------------------------------------------


DIRS_HELP = {
    "--conf-dir": ("DIR", "network configs (default: $NETCONFPATH, else /etc/cni/net.d)"),
    "--cache-dir": ("DIR", "libcni's result cache (default: $CNI_CACHE_DIR, else /var/lib/cni)"),
    "--plugin-dir": ("DIRS", "plugin dirs, colon-separated (default: $CNI_PATH, else this "
                             "executable's dir, /opt/cni/bin, /usr/lib/cni)"),
}
SHORT_EPILOG = (f"Also --conf-dir, --cache-dir, --plugin-dir (see {PROGRAM} --help).\n"
                f"Exit: {EXIT_OK} ok, {EXIT_PLUGIN} a plugin failed, {EXIT_USAGE} usage, "
                f"{EXIT_CONFIG} config or plugin, {EXIT_TARGET} target not found.")


def _dirs_options(parser, top: bool) -> None:
    """--conf-dir, --cache-dir, --plugin-dir: accepted before and after the subcommand
    (after it, they are not repeated in the subcommand's short help)."""
    group = parser.add_argument_group("where things are") if top else parser
    for option, (metavar, text) in DIRS_HELP.items():
        group.add_argument(option, metavar=metavar, default=None if top else argparse.SUPPRESS,
                           help=text if top else argparse.SUPPRESS)


def _attachment_options(parser) -> None:
    parser.add_argument("network", metavar="NETWORK", help="a network config's name, or its path")
    parser.add_argument("target", metavar="TARGET", help="netns path or name, docker:NAME or pid:N")
    parser.add_argument("--ifname", default=None, metavar="IF", help="interface in the container (default eth0)")
    parser.add_argument("--id", dest="container_id", metavar="ID", help="container id (default: from TARGET)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Attach containers to CNI networks and inspect attachments, as a runtime (libcni) does.",
        epilog=f"{TARGET_HELP}\n\n{EXIT_CODES}\n\n`{PROGRAM} COMMAND --help` describes one command.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    _dirs_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help_text, description):
        p = sub.add_parser(name, help=help_text, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SHORT_EPILOG)
        _dirs_options(p, top=False)
        return p

    p = command("add", "attach TARGET to NETWORK; print the result",
                f"Run ADD on every plugin of NETWORK for TARGET, cache the result as libcni does, print it.\n"
                f"On failure, DEL runs on the plugins already run, in reverse.\n{TARGET_SHORT}")
    _attachment_options(p)
    p.add_argument("-p", "--publish", action="append", default=[], metavar="PORT",
                   help="[IP:]HOST:CONTAINER[/PROTO], e.g. 8080:80 (runtimeConfig portMappings); repeatable")
    p.add_argument("--ip", action="append", default=[], metavar="ADDR",
                   help="an address to request (runtimeConfig ips); repeatable")
    p.add_argument("--mac", metavar="MAC", help="the container interface's MAC (runtimeConfig mac)")
    p.add_argument("--args", default="", metavar="K=V;K=V", help="CNI_ARGS for the plugins")
    p.set_defaults(func=cmd_add)

    p = command("del", "detach TARGET from NETWORK",
                f"Run DEL on every plugin of NETWORK in reverse, with the cached result as prevResult; then\n"
                f"drop the cache entry. Works when the netns is gone, and without a cache entry.\n"
                f"{TARGET_SHORT} The cached attachment at that netns decides the id and ifname;\n"
                f"TARGET may also be a container id (or prefix) from `{PROGRAM} ls`.")
    _attachment_options(p)
    p.set_defaults(func=cmd_del)

    p = command("check", "check TARGET's attachment to NETWORK",
                f"Run CHECK on every plugin of NETWORK with the cached result (cniVersion 0.4.0 and later).\n"
                f"{TARGET_SHORT}")
    _attachment_options(p)
    p.set_defaults(func=cmd_check)

    p = command("gc", "remove NETWORK's stale attachments",
                "DEL every cached attachment of NETWORK whose netns is gone, then run GC on every plugin\n"
                "with the attachments that remain as cni.dev/valid-attachments (cniVersion 1.1.0).\n"
                "The cache is taken as the truth, as a runtime's list is: the plugins collect what it\n"
                "does not hold, so use the cache dir of the runtime that made the attachments.")
    p.add_argument("network", metavar="NETWORK", help="a network config's name, or its path")
    p.set_defaults(func=cmd_gc)

    p = command("status", "ask NETWORK's plugins whether they are ready",
                "Run STATUS on every plugin of NETWORK (cniVersion 1.1.0 and later).")
    p.add_argument("network", metavar="NETWORK", help="a network config's name, or its path")
    p.set_defaults(func=cmd_status)

    p = command("ls", "list attachments",
                "One row per cached attachment: network, container id, ifname, netns, addresses, published\n"
                "ports, and whether the netns, the lease and our nftables rules are still there.\n"
                "STATE is ok, stale (netns gone: `gc` removes it), names what is missing, or says the\n"
                "cache records no netns (entries of libcni before 1.2 without a sandbox in the result).")
    p.add_argument("network", metavar="NETWORK", nargs="?", help="only this network")
    p.add_argument("--json", action="store_true", help="a JSON list of objects instead of a table")
    p.set_defaults(func=cmd_ls)
    return parser


# ---- where things are --------------------------------------------------------------------


def own_directory(argv0: str | None = None) -> str | None:
    """The plugin dir this executable belongs to: the dir holding `.cni-bridge/` when the
    executable is a build (build/bin, or an install's DIR), else the dir it was run from."""
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    if "/" not in argv0:
        argv0 = shutil.which(argv0) or argv0
    exe = sys.executable if getattr(sys, "frozen", False) else argv0
    parts = os.path.realpath(exe).split(os.sep)
    if ".cni-bridge" in parts:
        return os.sep.join(parts[: parts.index(".cni-bridge")]) or os.sep
    return os.path.dirname(os.path.abspath(argv0)) if "/" in argv0 else None


def plugin_path(option: str | None, environ) -> list[str]:
    value = option if option is not None else environ.get("CNI_PATH", "")
    if value:
        return [p for p in value.split(":") if p]
    own = own_directory()
    dirs = [own] if own else []
    return dirs + [d for d in rt_mod.SYSTEM_PLUGIN_DIRS if d not in dirs]


def make_runtime(opts, environ) -> Runtime:
    cache_dir = opts.cache_dir or environ.get("CNI_CACHE_DIR") or rt_mod.DEFAULT_CACHE_DIR
    return Runtime(plugin_path(opts.plugin_dir, environ), cache_dir, environ=environ)


def conf_dir(opts, environ) -> str:
    return opts.conf_dir or environ.get("NETCONFPATH") or rt_mod.DEFAULT_CONF_DIR


def load_network(opts, environ) -> NetworkList:
    return rt_mod.load_network(opts.network, conf_dir(opts, environ))


# ---- targets -----------------------------------------------------------------------------


class Target:
    """A resolved TARGET: the netns path and the container id it implies."""

    def __init__(self, netns: str, container_id: str, what: str):
        self.netns, self.container_id, self.what = netns, container_id, what


def resolve_target(spec: str, environ) -> Target:
    """TARGET as given: docker:NAME, pid:N, a path, or a name under /run/netns."""
    if spec.startswith("docker:"):
        return _docker_target(spec[len("docker:"):], environ)
    if spec.startswith("pid:"):
        pid = spec[len("pid:"):]
        if not pid.isdigit():
            raise InvalidArgument(f"pid:{pid}: not a process id")
        return Target(f"/proc/{pid}/ns/net", f"pid-{pid}", f"process {pid}")
    if "/" in spec:
        path = spec
        parts = os.path.normpath(path).split(os.sep)
        if len(parts) == 5 and parts[1] == "proc" and parts[3:] == ["ns", "net"] and parts[2].isdigit():
            return Target(path, f"pid-{parts[2]}", f"process {parts[2]}")
        return Target(path, os.path.basename(os.path.normpath(path)), f"netns {path}")
    for directory in NETNS_DIRS:
        path = os.path.join(directory, spec)
        if os.path.exists(path):
            return Target(path, spec, f"netns {spec}")
    return Target(os.path.join(NETNS_DIRS[0], spec), spec, f"netns {spec}")


def _docker_target(name: str, environ) -> Target:
    docker = shutil.which("docker", path=environ.get("PATH")) or "docker"
    try:
        proc = subprocess.run([docker, "inspect", "-f", "{{.Id}} {{.NetworkSettings.SandboxKey}}", name],
                              capture_output=True, text=True, env=dict(environ), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TargetError(f"docker:{name}: cannot run docker: {err}") from None
    if proc.returncode != 0:
        raise TargetError(f"docker:{name}: {proc.stderr.strip() or 'docker inspect failed'}")
    fields = proc.stdout.split()
    if len(fields) < 2:
        raise TargetError(f"docker:{name}: the container has no network namespace (is it running?)")
    return Target(fields[1], fields[0], f"docker container {name}")


def attachment(opts, runtime: Runtime, network_name: str, need_netns: bool, environ) -> RuntimeConf:
    """The RuntimeConf for add, del or check.

    add needs a live netns. del and check first look in the network's cache: the
    attachment at the target's netns (its container id, ifname, CNI_ARGS and capability
    args, as libcni's GC reuses them), or, for a bare TARGET that is no netns name, the
    attachment whose container id starts with TARGET. Without a cache entry they go by
    TARGET alone (DEL then runs without prevResult)."""
    bare = not opts.target.startswith(("docker:", "pid:")) and "/" not in opts.target
    if need_netns:
        target = resolve_target(opts.target, environ)
        if not rt_mod.netns_alive(target.netns):
            raise TargetError(f"{opts.target}: {target.netns} is not a network namespace")
        return RuntimeConf(opts.container_id or target.container_id, target.netns, opts.ifname or "eth0")
    try:
        target = resolve_target(opts.target, environ)
    except TargetError:
        target = None  # docker no longer knows it: the cache may
    entries = runtime.cached_attachments(network_name)
    if opts.ifname:
        entries = [e for e in entries if e.ifname == opts.ifname]
    if opts.container_id:
        entries = [e for e in entries if e.container_id == opts.container_id]
    matches = [e for e in entries if target is not None and rt_mod.same_netns(e.netns, target.netns)]
    if not matches and bare and (target is None or not os.path.exists(target.netns)):
        matches = [e for e in entries if e.container_id.startswith(opts.target)]
    if len(matches) > 1:
        found = ", ".join(f"{e.container_id[:12]} {e.ifname}" for e in matches)
        raise InvalidArgument(f"{opts.target}: several attachments of {network_name!r} match ({found}): "
                              "name one with --id or --ifname")
    if matches:
        entry = matches[0]
        return RuntimeConf(entry.container_id, entry.netns, entry.ifname, entry.cni_args, entry.capability_args)
    if target is None:
        raise TargetError(f"{opts.target}: docker does not know it, and no cached attachment of "
                          f"{network_name!r} matches it")
    return RuntimeConf(opts.container_id or target.container_id, target.netns, opts.ifname or "eth0")


def parse_port(spec: str) -> dict:
    """[IP:]HOST:CONTAINER[/PROTO] as a portMappings entry."""
    text, _, protocol = spec.partition("/")
    protocol = protocol.lower() or "tcp"
    if protocol not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"-p {spec}: protocol must be tcp, udp or sctp")
    host_ip = ""
    if text.startswith("["):  # [v6]:HOST:CONTAINER
        host_ip, _, text = text[1:].partition("]:")
    elif text.count(":") == 2:
        host_ip, _, text = text.partition(":")
    host, sep, container = text.partition(":")
    if not sep or not host.isdigit() or not container.isdigit():
        raise InvalidArgument(f"-p {spec}: expected [IP:]HOST:CONTAINER[/PROTO], e.g. 8080:80")
    mapping = {"hostPort": int(host), "containerPort": int(container), "protocol": protocol}
    if not all(0 < mapping[k] < 65536 for k in ("hostPort", "containerPort")):
        raise InvalidArgument(f"-p {spec}: ports are 1..65535")
    if host_ip:
        mapping["hostIP"] = host_ip
    return mapping


def format_port(mapping: dict) -> str:
    host_ip = mapping.get("hostIP") or ""
    if ":" in host_ip:
        host_ip = f"[{host_ip}]"
    prefix = f"{host_ip}:" if host_ip else ""
    return f"{prefix}{mapping.get('hostPort')}:{mapping.get('containerPort')}/{mapping.get('protocol') or 'tcp'}"


# ---- the subcommands ---------------------------------------------------------------------


def cmd_add(opts, environ, out, err) -> int:
    runtime = make_runtime(opts, environ)
    net = load_network(opts, environ)
    rt = attachment(opts, runtime, net.name, True, environ)
    capability_args = {}
    if opts.publish:
        capability_args["portMappings"] = [parse_port(p) for p in opts.publish]
    if opts.ip:
        capability_args["ips"] = list(opts.ip)
    if opts.mac:
        capability_args["mac"] = opts.mac
    rt.capability_args = capability_args
    rt.args = rt_mod.parse_cni_args(opts.args)
    result = runtime.add(net, rt)
    out.write(json.dumps(result, indent=2) + "\n")
    return EXIT_OK


def _network_for_removal(opts, runtime: Runtime, environ) -> tuple[NetworkList | None, str]:
    """del works when the config is gone but the cache still holds it."""
    try:
        net = load_network(opts, environ)
        return net, net.name
    except ConfigError:
        if "/" in opts.network:
            raise
        for entry in runtime.cached_attachments(opts.network):
            cached_net = entry.network_list()
            if cached_net is not None:
                return None, opts.network
        raise


def cmd_del(opts, environ, out, err) -> int:
    runtime = make_runtime(opts, environ)
    net, name = _network_for_removal(opts, runtime, environ)
    rt = attachment(opts, runtime, name, False, environ)
    if net is None:  # the config file is gone: DEL with the config cached with the attachment
        entry = runtime.cached(name, rt.container_id, rt.ifname)
        net = entry.network_list() if entry is not None else None
        if net is None:
            raise ConfigError(f"no network config named {name!r} in {conf_dir(opts, environ)}, "
                              f"and no cached one for {rt.container_id} {rt.ifname}")
    runtime.delete(net, rt)
    return EXIT_OK


def cmd_check(opts, environ, out, err) -> int:
    runtime = make_runtime(opts, environ)
    net = load_network(opts, environ)
    rt = attachment(opts, runtime, net.name, False, environ)
    if not rt_mod.netns_alive(rt.netns):
        raise TargetError(f"{opts.target}: {rt.netns or 'the netns'} is not a network namespace")
    runtime.check(net, rt)
    out.write(f"{net.name} {rt.container_id} {rt.ifname}: ok\n")
    return EXIT_OK


def cmd_gc(opts, environ, out, err) -> int:
    runtime = make_runtime(opts, environ)
    net = load_network(opts, environ)
    entries = runtime.cached_attachments(net.name)
    # valid: what still has its netns, and what the cache cannot tell (no netns recorded)
    valid = [(e.container_id, e.ifname) for e in entries if not e.netns or rt_mod.netns_alive(e.netns)]
    removed = runtime.gc(net, valid)
    for entry in removed:
        out.write(f"removed stale {net.name} {entry.container_id} {entry.ifname} (netns {entry.netns or '-'})\n")
    return EXIT_OK


def cmd_status(opts, environ, out, err) -> int:
    runtime = make_runtime(opts, environ)
    net = load_network(opts, environ)
    if runtime.status(net):
        out.write(f"{net.name}: ready\n")
    else:
        out.write(f"{net.name}: cniVersion {net.cni_version or '0.1.0'} has no STATUS (needs 1.1.0); "
                  "its plugins exist and support it\n")
    return EXIT_OK


def cmd_ls(opts, environ, out, err) -> int:
    runtime = make_runtime(opts, environ)
    rows = list_attachments(runtime, opts.network)
    if opts.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_OK
    if not rows:
        err.write(f"no attachments in {os.path.join(runtime.cache_dir, 'results')}\n")
        return EXIT_OK
    style = Style(out)
    header = ["NETWORK", "CONTAINER", "IFNAME", "NETNS", "ADDRESSES", "PORTS", "STATE"]
    table = [header]
    for row in rows:
        state = row_state(row)
        table.append([row["network"], row["containerId"][:12], row["ifname"], row["netns"] or "-",
                      ",".join(row["addresses"]) or "-", ",".join(row["ports"]) or "-", state])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for n, r in enumerate(table):
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths)]
        last = r[-1]
        if n == 0:
            line = style.bold("  ".join(cells + [last]))
        else:
            colour = style.green if last == "ok" else style.red if last.startswith("stale") else style.yellow
            line = "  ".join(cells + [colour(last)])
        out.write(line.rstrip() + "\n")
    return EXIT_OK


def row_state(row: dict) -> str:
    if row["stale"]:
        return "stale"
    missing = [what for what, key in (("lease", "lease"), ("rules", "rules")) if row[key] is False]
    if missing:
        return f"missing {'+'.join(missing)}"
    return "ok" if row["netnsPresent"] else "netns unknown"


def list_attachments(runtime: Runtime, network: str | None = None) -> list[dict]:
    """What `ls` shows: one dict per cached attachment. lease and rules are None where the
    network has no host-local IPAM or no rules of ours (ipMasq, macspoofchk)."""
    rows = []
    ours = _OurElements()
    for entry in runtime.cached_attachments(network):
        net = entry.network_list()
        addresses, upgraded = [], None
        if entry.result:
            try:
                upgraded = rt_mod.versions.upgrade_result(entry.result, net.cni_version if net else "1.1.0")
                addresses = [ip["address"] for ip in upgraded.get("ips") or [] if "address" in ip]
            except Exception:  # an odd cached result must not break the listing
                addresses, upgraded = [], None
        ports = [format_port(p) for p in entry.capability_args.get("portMappings") or [] if isinstance(p, dict)]
        netns_ok = rt_mod.netns_alive(entry.netns) if entry.netns else None  # None: the cache does not say
        rows.append({
            "network": entry.network, "containerId": entry.container_id, "ifname": entry.ifname,
            "netns": entry.netns, "addresses": addresses, "ports": ports,
            "netnsPresent": netns_ok, "lease": _lease_present(net, entry), "rules": ours.present(net, entry, upgraded),
            "stale": netns_ok is False, "cacheFile": entry.path,
        })
    return rows


def _is_type(plugin: dict, name: str) -> bool:
    plugin_type = plugin.get("type") or ""
    return plugin_type == name or plugin_type.endswith("-" + name)


def _lease_present(net: NetworkList | None, entry) -> bool | None:
    if net is None:
        return None
    for plugin in net.plugins:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and _is_type(ipam, "host-local"):
            from ipam.config import DEFAULT_DATA_DIR
            from ipam.store import Store

            data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
            try:
                with Store(data_dir, net.name, create=False) as store:
                    return bool(store.leases_of(entry.container_id, entry.ifname))
            except Exception:
                return None
    return None


class _OurElements:
    """The elements of our nftables tables, listed once, on first need, by owner."""

    def __init__(self):
        self._owned = None
        self._failed = False

    def present(self, net: NetworkList | None, entry, result: dict | None) -> bool | None:
        """Whether every element the attachment's bridge plugin made is there; None when it
        made none (no ipMasq or macspoofchk), or when the cache or the kernel cannot say."""
        bridge = next((p for p in net.plugins if _is_type(p, "bridge")), None) if net is not None else None
        if bridge is None or not (bridge.get("ipMasq") or bridge.get("macspoofchk")) or result is None:
            return None
        from cni_bridge.nft import masq, spoof, table

        key = table.attachment_key(entry.network, entry.container_id, entry.ifname)
        expected = []
        try:
            if bridge.get("ipMasq"):
                expected += masq.elements(key, [ip["address"] for ip in result.get("ips") or []])
            if bridge.get("macspoofchk"):
                interfaces = result.get("interfaces") or []
                host = next((i["name"] for i in interfaces if not i.get("sandbox") and i.get("name", "").startswith("veth")), None)
                mac = next((i.get("mac") for i in interfaces if i.get("sandbox") and i.get("name") == entry.ifname), None)
                if host and mac:
                    expected += spoof.elements(key, host, mac)
        except (ValueError, KeyError, TypeError):  # an odd cached result: unknown, not "missing"
            return None
        if self._owned is None and not self._failed:
            try:
                self._owned = {(e.set, e.key, e.comment) for family in table.FAMILIES
                               for name in table.set_names(family) for e in table.elements(family, name)}
            except Exception:  # no permission, an old kernel: unknown, not "missing"
                self._failed = True
        if self._owned is None:
            return None
        return all((e.set, e.key, e.comment) in self._owned for e in expected)


# ---- main --------------------------------------------------------------------------------


def report(error: RuntimeFailure, command: str, err) -> None:
    style = Style(err)
    err.write(f"{PROGRAM} {command}: {style.red('error')}: {error}\n")
    if isinstance(error, PluginError) and error.undone:
        err.write(f"{PROGRAM} {command}: undone with DEL, in reverse: {', '.join(error.undone)}\n")
        for undo_error in error.undo_errors:
            err.write(f"{PROGRAM} {command}: {style.yellow('warning')}: {undo_error}\n")


def main(argv=None, environ=None, out=None, err=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # help and usage errors
            opts = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if opts.version:
        from cni_bridge.cni.version import CURRENT_VERSION, SUPPORTED_VERSIONS

        out.write(f"{PROGRAM} (CNI {CURRENT_VERSION}; configs {', '.join(SUPPORTED_VERSIONS)})\n")
        return EXIT_OK
    if not opts.command:
        parser.print_help(err)
        return EXIT_USAGE
    try:
        return opts.func(opts, environ, out, err)
    except RuntimeFailure as error:
        report(error, opts.command, err)
        return error.exit_code
    except OSError as error:  # what no step foresaw (a file we may not read, say): said, not a traceback
        report(RuntimeFailure(str(error)), opts.command, err)
        return EXIT_PLUGIN
    except KeyboardInterrupt:
        return 130
