"""What libcni does for a runtime, in one module: the `cni-bridge` command and the tests use
it, so the suite has one implementation of the libcni behaviour.

- Network configs: a `.conflist`, or a single `.conf`/`.json` config wrapped into a list
  of one plugin (libcni's ConfListFromConf), found by name in a config dir (conflists
  first, then single configs, each in file name order, as libcni's LoadConfList) or read
  from a path.
- Plugins are found by type in a list of directories and asked VERSION first; a config
  whose cniVersion a plugin does not support is refused, naming both.
- ADD runs the list in order, each plugin getting the list's name and cniVersion, the
  previous plugin's result as prevResult and, for the capabilities it declares,
  `runtimeConfig` from the runtime's capability args. The final result is cached.
  A plugin that fails is reported (PluginError: its type, code, message), after DEL has
  run in reverse from it back to the first plugin.
- DEL runs the list in reverse with the cached result as prevResult (from 0.4.0 on, as
  libcni), and still runs without a cache entry; then the entry goes. CHECK (0.4.0+) runs
  in order with the cached result. GC (libcni's GCNetworkList) DELs the cached
  attachments that are not valid, then, from 1.1.0 on, sends every plugin GC with
  `cni.dev/valid-attachments` (and the older spelling `cni.dev/attachments`). STATUS
  (1.1.0+) runs on every plugin.
- The cache is libcni's, byte for byte compatible: `<cache dir>/results/<network>-<container
  id>-<ifname>` holding `{"kind": "cniCacheV1", "containerId", "config" (the list's bytes,
  base64 as Go writes a []byte), "ifName", "networkName", "netns", "cniArgs",
  "capabilityArgs", "result"}`. containerd's, podman's and cnitool's entries are read,
  and ours are read by them.

Where this departs from libcni, on purpose: a DEL whose netns is no longer a network
namespace gets CNI_NETNS="" (the spec allows it; plugins then skip the netns work instead
of failing on a leftover file), and an ADD that fails is undone here rather than left to
the caller.

Plugins run as processes (optionally under a command prefix such as `ip netns exec NODE`),
with our environment plus the CNI_* variables, their stderr passed through.
"""

import base64
import json
import os
import subprocess

from cni_bridge.cni import names
from cni_bridge.cni import version as versions
from cni_bridge.cni.errors import CNIError
from cni_bridge.cni.invoke import child_environment

DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CACHE_DIR = "/var/lib/cni"
SYSTEM_PLUGIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
CONF_EXTENSIONS = (".conf", ".conflist", ".json")
CACHE_KIND = "cniCacheV1"
# The version this runtime speaks: sent with VERSION, the newest a config may use.
RUNTIME_VERSION = versions.CURRENT_VERSION


# ---- errors ------------------------------------------------------------------------------


class RuntimeFailure(Exception):
    """Anything that stops a runtime operation; `exit_code` is the command's exit status."""

    exit_code = 1


class InvalidArgument(RuntimeFailure):
    """A container id, interface name or option libcni would refuse."""

    exit_code = 2


class ConfigError(RuntimeFailure):
    """A network config that is missing or malformed, a plugin that cannot be found or does
    not support the config's cniVersion."""

    exit_code = 3


class PluginError(RuntimeFailure):
    """A plugin answered a command with an error (or with something that is not a result).

    plugin: its type; code, msg, details: the spec's error fields (code None when the
    plugin did not print error JSON). `undone` lists the plugins that DEL ran on after a
    failed ADD; `undo_errors` the DELs of those that failed too.
    """

    exit_code = 1

    def __init__(self, plugin: str, command: str, code, msg: str, details: str = ""):
        self.plugin, self.command, self.code, self.msg, self.details = plugin, command, code, msg, details
        self.undone: list[str] = []
        self.undo_errors: list["PluginError"] = []
        super().__init__(str(self))

    def __str__(self) -> str:
        code = f"code {self.code}" if self.code is not None else "no error code"
        text = f"plugin {self.plugin} failed ({self.command}): {code}: {self.msg}"
        return f"{text}: {self.details}" if self.details else text


# ---- network configs ---------------------------------------------------------------------


class NetworkList:
    """A network: its name, cniVersion, plugin configs (dicts) and the bytes libcni caches."""

    def __init__(self, name: str, cni_version: str, plugins: list[dict], raw: bytes, source: str = "",
                 disable_check: bool = False, disable_gc: bool = False):
        self.name, self.cni_version, self.plugins, self.raw = name, cni_version, plugins, raw
        self.source = source
        self.disable_check, self.disable_gc = disable_check, disable_gc

    def __repr__(self) -> str:
        return f"NetworkList({self.name!r}, {self.cni_version!r}, {[p.get('type') for p in self.plugins]})"

    @property
    def types(self) -> list[str]:
        return [p["type"] for p in self.plugins]

    def without(self, *types: str) -> "NetworkList":
        """The same network minus the plugins of these types (a test that must skip one)."""
        kept = [p for p in self.plugins if p["type"] not in types]
        return NetworkList(self.name, self.cni_version, kept, self.raw, self.source, self.disable_check, self.disable_gc)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "") -> "NetworkList":
        where = source or "network config"
        try:
            doc = json.loads(data)
        except ValueError as err:
            raise ConfigError(f"{where}: not JSON: {err}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: not a JSON object")
        if "plugins" not in doc:  # a single plugin's config: libcni's ConfListFromConf
            if not isinstance(doc.get("type"), str) or not doc["type"]:
                raise ConfigError(f"{where}: missing 'type'")
            wrapped = {"cniVersion": doc.get("cniVersion", ""), "name": doc.get("name"), "plugins": [doc]}
            return cls.from_bytes(_go_json(wrapped), source)
        name = doc.get("name")
        if not isinstance(name, str) or not names.is_valid_name(name):
            raise ConfigError(f"{where}: invalid or missing network name {name!r}")
        cni_version = _pick_version(doc, where)
        plugins = doc["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise ConfigError(f"{where}: 'plugins' must be a non-empty list")
        for n, plugin in enumerate(plugins):
            if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
                raise ConfigError(f"{where}: plugin {n} has no 'type'")
        return cls(name, cni_version, [dict(p) for p in plugins], bytes(data), source,
                   _flag(doc, "disableCheck", where), _flag(doc, "disableGC", where))

    @classmethod
    def from_dict(cls, doc: dict, source: str = "") -> "NetworkList":
        """A config or conflist given as a dict (its bytes: compact JSON)."""
        return cls.from_bytes(json.dumps(doc, separators=(",", ":")).encode(), source)

    @classmethod
    def from_file(cls, path: str) -> "NetworkList":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror}") from None
        return cls.from_bytes(data, path)


def _go_json(value) -> bytes:
    """JSON as Go's encoding/json writes a map: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _pick_version(doc: dict, where: str) -> str:
    """cniVersion, or the newest of `cniVersions` this runtime speaks (as libcni picks)."""
    version = doc.get("cniVersion", "")
    if not isinstance(version, str):
        raise ConfigError(f"{where}: cniVersion must be a string")
    listed = doc.get("cniVersions")
    if listed is None:
        return version
    if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
        raise ConfigError(f"{where}: cniVersions must be a list of strings")
    candidates = [v for v in [*listed, version] if v]
    try:
        usable = [v for v in candidates if versions.version_tuple(v) <= versions.version_tuple(RUNTIME_VERSION)]
    except ValueError:
        raise ConfigError(f"{where}: invalid version in cniVersions {listed}") from None
    return max(usable, key=versions.version_tuple) if usable else version


def _flag(doc: dict, key: str, where: str) -> bool:
    value = doc.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{where}: {key} must be a boolean")


def conf_files(conf_dir: str) -> list[str]:
    """libcni's search order: .conflist files, then .conf and .json files, each sorted."""
    try:
        entries = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ConfigError(f"cannot read the config dir {conf_dir}: {err.strerror}") from None
    files = [os.path.join(conf_dir, e) for e in entries if os.path.isfile(os.path.join(conf_dir, e))]
    return [f for f in files if f.endswith(".conflist")] + [f for f in files if f.endswith((".conf", ".json"))]


def load_network(name_or_path: str, conf_dir: str) -> NetworkList:
    """The network called `name_or_path` in conf_dir, or the config file at that path."""
    if "/" in name_or_path or (name_or_path.endswith(CONF_EXTENSIONS) and os.path.isfile(name_or_path)):
        return NetworkList.from_file(name_or_path)
    seen = []
    for path in conf_files(conf_dir):
        try:
            net = NetworkList.from_file(path)
        except ConfigError:
            continue  # a broken file of another network does not hide this one
        if net.name == name_or_path:
            return net
        seen.append(net.name)
    known = f" (it has {', '.join(sorted(set(seen)))})" if seen else " (it has none)"
    raise ConfigError(f"no network config named {name_or_path!r} in {conf_dir}{known}")


def list_networks(conf_dir: str) -> list[NetworkList]:
    """Every readable network config in conf_dir, the first of each name (libcni's choice)."""
    found: dict[str, NetworkList] = {}
    for path in conf_files(conf_dir):
        try:
            net = NetworkList.from_file(path)
        except ConfigError:
            continue
        found.setdefault(net.name, net)
    return list(found.values())


# ---- one attachment ----------------------------------------------------------------------


class RuntimeConf:
    """libcni's RuntimeConf: who is attached where, CNI_ARGS pairs and capability args."""

    def __init__(self, container_id: str, netns: str, ifname: str = "eth0", args=(), capability_args=None):
        self.container_id, self.netns, self.ifname = container_id, netns, ifname
        self.args: list[list[str]] = [list(pair) for pair in args]
        self.capability_args: dict = dict(capability_args or {})

    def __repr__(self) -> str:
        return f"RuntimeConf({self.container_id!r}, {self.netns!r}, {self.ifname!r})"


def parse_cni_args(text: str) -> list[list[str]]:
    """`K=V;K2=V2` as libcni's Args pairs."""
    pairs = []
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"CNI_ARGS item {item!r} is not KEY=VALUE")
        pairs.append([key, value])
    return pairs


class CacheEntry:
    """One file of libcni's result cache."""

    def __init__(self, path: str, network: str, container_id: str, ifname: str, netns: str = "",
                 config: bytes | None = None, cni_args=None, capability_args=None, result: dict | None = None):
        self.path, self.network, self.container_id, self.ifname = path, network, container_id, ifname
        self.config = config
        self.cni_args: list = cni_args or []
        self.capability_args: dict = capability_args or {}
        self.result = result
        # libcni before 1.2 (containerd 1.6/1.7, podman 4) cached no netns: the result's
        # sandbox of the attachment's interface names it. "" when neither says.
        self.netns = netns or _sandbox_of(result, ifname)

    def __repr__(self) -> str:
        return f"CacheEntry({self.network!r}, {self.container_id!r}, {self.ifname!r}, netns={self.netns!r})"

    def network_list(self) -> NetworkList | None:
        """The network config cached with the attachment (None when absent or unreadable)."""
        if not self.config:
            return None
        try:
            return NetworkList.from_bytes(self.config, f"the config cached in {self.path}")
        except ConfigError:
            return None

    def runtime_conf(self) -> RuntimeConf:
        """What DEL needs to undo this attachment, as libcni's GC rebuilds it."""
        return RuntimeConf(self.container_id, self.netns, self.ifname, self.cni_args, self.capability_args)


def _sandbox_of(result, ifname: str) -> str:
    interfaces = result.get("interfaces") if isinstance(result, dict) else None
    if not isinstance(interfaces, list):
        return ""
    sandboxes = [i for i in interfaces if isinstance(i, dict) and isinstance(i.get("sandbox"), str) and i["sandbox"]]
    named = [i for i in sandboxes if i.get("name") == ifname]
    return (named or sandboxes or [{"sandbox": ""}])[0]["sandbox"]


def netns_alive(path: str) -> bool:
    """True if `path` is (still) a network namespace."""
    if not path:
        return False
    from cni_bridge.kernel.netns import open_netns

    try:
        os.close(open_netns(path))
    except CNIError:
        return False
    return True


def same_netns(a: str, b: str) -> bool:
    """Two netns paths naming the same namespace file (/var/run is /run; bind mounts)."""
    if not a or not b:
        return False
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    # an nsfs inode identifies the namespace; two empty files on one tmpfs differ by inode
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# ---- the runtime -------------------------------------------------------------------------


def at_least(version: str, minimum: str) -> bool:
    return versions.at_least(version or versions.DEFAULT_VERSION, minimum)


class Runtime:
    """Runs network lists the way libcni does.

    path: the plugin directories (CNI_PATH); cache_dir: libcni's cache dir (results/ below
    it); exec_prefix: a command the plugins run under (e.g. ["ip", "netns", "exec", NODE]);
    environ: the environment the plugins inherit (default ours); stderr: where their stderr
    goes (default ours).
    """

    def __init__(self, path: list[str], cache_dir: str = DEFAULT_CACHE_DIR, exec_prefix=(), environ=None, stderr=None):
        self.path = [str(p) for p in path]
        self.cache_dir = str(cache_dir)
        self.exec_prefix = [str(a) for a in exec_prefix]
        self.environ = dict(os.environ if environ is None else environ)
        self.stderr = stderr
        self._versions: dict[str, list[str]] = {}

    # -- plugins

    def find(self, plugin_type: str) -> str:
        if not plugin_type or "/" in plugin_type:
            raise ConfigError(f"invalid plugin type {plugin_type!r}")
        for directory in self.path:
            candidate = os.path.join(directory, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise ConfigError(f"plugin {plugin_type} not found in {':'.join(self.path) or '(no plugin dirs)'}")

    def supported_versions(self, plugin_type: str) -> list[str]:
        """The plugin's answer to VERSION (a plugin that knows no VERSION speaks 0.1.0)."""
        if plugin_type not in self._versions:
            try:
                info = self._run(plugin_type, "VERSION", _go_json({"cniVersion": RUNTIME_VERSION}), None)
            except PluginError as err:
                if err.msg == "unknown CNI_COMMAND: VERSION":
                    info = {"supportedVersions": ["0.1.0"]}
                else:
                    raise
            supported = info.get("supportedVersions") if isinstance(info, dict) else None
            if not isinstance(supported, list):
                raise PluginError(plugin_type, "VERSION", None, "answered VERSION without supportedVersions", repr(info))
            self._versions[plugin_type] = [str(v) for v in supported]
        return self._versions[plugin_type]

    def validate(self, net: NetworkList) -> None:
        """Every plugin exists and supports the list's cniVersion (libcni's ValidateNetworkList)."""
        wanted = net.cni_version or versions.DEFAULT_VERSION
        for plugin_type in net.types:
            supported = self.supported_versions(plugin_type)
            if wanted not in supported:
                raise ConfigError(
                    f"plugin {plugin_type} ({self.find(plugin_type)}) does not support config version {wanted!r} "
                    f"of network {net.name!r}: it supports {', '.join(supported)}"
                )

    # -- commands on a list

    def add(self, net: NetworkList, rt: RuntimeConf) -> dict:
        """ADD every plugin in order; cache and return the final result."""
        self._check_names(net, rt)
        self.validate(net)
        result = None
        for index, plugin in enumerate(net.plugins):
            try:
                result = self._plugin("ADD", net, plugin, result, rt)
            except PluginError as err:
                self._undo(net, net.plugins[: index + 1], result, rt, err)
                raise
            if result is None:
                err = PluginError(plugin["type"], "ADD", None, "printed no result")
                self._undo(net, net.plugins[: index + 1], None, rt, err)
                raise err
        self._cache_add(net, rt, result)
        return result

    def _undo(self, net, plugins, last_result, rt, err: PluginError) -> None:
        prev = last_result if at_least(net.cni_version, "0.4.0") else None
        for plugin in reversed(plugins):
            err.undone.append(plugin["type"])
            try:
                self._plugin("DEL", net, plugin, prev, rt)
            except PluginError as undo_err:
                err.undo_errors.append(undo_err)

    def delete(self, net: NetworkList, rt: RuntimeConf) -> None:
        """DEL every plugin in reverse with the cached result; then drop the cache entry.
        Stops at the first plugin that fails (the entry stays for a retry), as libcni."""
        self._check_names(net, rt)
        self.validate(net)
        prev = self.cached_result(net, rt) if at_least(net.cni_version, "0.4.0") else None
        if rt.netns and not netns_alive(rt.netns):
            rt = RuntimeConf(rt.container_id, "", rt.ifname, rt.args, rt.capability_args)
        for plugin in reversed(net.plugins):
            self._plugin("DEL", net, plugin, prev, rt)
        self._cache_del(net.name, rt.container_id, rt.ifname)

    def check(self, net: NetworkList, rt: RuntimeConf) -> None:
        """CHECK every plugin in order with the cached result as prevResult."""
        if not at_least(net.cni_version, "0.4.0"):
            raise ConfigError(f"network {net.name!r}: configuration version {net.cni_version or '0.1.0'!r} "
                              "does not support the CHECK command")
        self._check_names(net, rt)
        self.validate(net)
        if net.disable_check:
            return
        prev = self.cached_result(net, rt)
        for plugin in net.plugins:
            self._plugin("CHECK", net, plugin, prev, rt)

    def gc(self, net: NetworkList, valid) -> list[CacheEntry]:
        """libcni's GCNetworkList: DEL the cached attachments of `net` that are not in `valid`
        ((container id, ifname) pairs; None: none is valid), then GC every plugin (1.1.0+).
        Returns the attachments deleted; raises the first failure after trying everything."""
        if net.disable_gc:
            return []
        self.validate(net)
        keep = {(cid, ifname) for cid, ifname in (valid or ())}
        removed, errors = [], []
        for entry in self.cached_attachments(net.name):
            if (entry.container_id, entry.ifname) in keep:
                continue
            try:
                self.delete(net, entry.runtime_conf())
                removed.append(entry)
            except RuntimeFailure as err:
                errors.append(err)
        if at_least(net.cni_version, "1.1.0"):
            attachments = [{"containerID": cid, "ifname": ifname} for cid, ifname in sorted(keep)]
            for plugin in net.plugins:
                conf = {**plugin, "name": net.name, "cniVersion": net.cni_version}
                if valid is not None:
                    conf["cni.dev/valid-attachments"] = attachments
                    conf["cni.dev/attachments"] = attachments  # the 1.1.0 spec text's spelling
                try:
                    self._run(plugin["type"], "GC", _go_json(conf), RuntimeConf("", "", ""))
                except PluginError as err:
                    errors.append(err)
        if errors:
            raise errors[0]
        return removed

    def status(self, net: NetworkList) -> bool:
        """STATUS every plugin (1.1.0+); False when the version has no STATUS."""
        self.validate(net)
        if not at_least(net.cni_version, "1.1.0"):
            return False
        for plugin in net.plugins:
            conf = {**plugin, "name": net.name, "cniVersion": net.cni_version}
            self._run(plugin["type"], "STATUS", _go_json(conf), RuntimeConf("", "", ""))
        return True

    # -- one plugin

    @staticmethod
    def _check_names(net: NetworkList, rt: RuntimeConf) -> None:
        try:
            names.check_network_name(net.name)
            names.check_container_id(rt.container_id)
            names.check_interface_name(rt.ifname)
        except CNIError as err:
            raise InvalidArgument(str(err)) from None

    def plugin_conf(self, net: NetworkList, plugin: dict, prev: dict | None, rt: RuntimeConf) -> dict:
        """What libcni sends one plugin: its section with the list's name and cniVersion,
        prevResult, and runtimeConfig for the capabilities it declares."""
        conf = {**plugin, "name": net.name, "cniVersion": net.cni_version}
        if prev is not None:
            conf["prevResult"] = prev
        capabilities = plugin.get("capabilities") or {}
        runtime_config = {cap: rt.capability_args[cap] for cap, on in capabilities.items()
                          if on and cap in rt.capability_args}
        if runtime_config:
            conf["runtimeConfig"] = runtime_config
        return conf

    def _plugin(self, command: str, net: NetworkList, plugin: dict, prev, rt: RuntimeConf):
        return self._run(plugin["type"], command, _go_json(self.plugin_conf(net, plugin, prev, rt)), rt)

    def _run(self, plugin_type: str, command: str, stdin: bytes, rt: RuntimeConf | None):
        """Exec one plugin; return its stdout as JSON for ADD and VERSION, else None."""
        executable = self.find(plugin_type)
        env = child_environment(self.environ)
        rt = rt or RuntimeConf("", "", "")
        env.update(
            CNI_COMMAND=command, CNI_CONTAINERID=rt.container_id, CNI_NETNS=rt.netns,
            CNI_ARGS=";".join(f"{k}={v}" for k, v in rt.args), CNI_IFNAME=rt.ifname, CNI_PATH=":".join(self.path),
        )
        try:
            proc = subprocess.run([*self.exec_prefix, executable], input=stdin, env=env,
                                  stdout=subprocess.PIPE, stderr=self.stderr)
        except OSError as err:
            raise PluginError(plugin_type, command, None, f"cannot run {executable}", err.strerror) from None
        out = proc.stdout.strip()
        if proc.returncode != 0:
            try:
                error = json.loads(out)
                raise PluginError(plugin_type, command, error.get("code"), str(error.get("msg", "")),
                                  str(error.get("details", "") or ""))
            except (ValueError, AttributeError):
                raise PluginError(plugin_type, command, None, f"exit status {proc.returncode}",
                                  out.decode(errors="replace")) from None
        if command not in ("ADD", "VERSION"):
            return None
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError as err:
            raise PluginError(plugin_type, command, None, "printed something that is not JSON", str(err)) from None

    # -- libcni's result cache

    def cache_path(self, network: str, container_id: str, ifname: str) -> str:
        return os.path.join(self.cache_dir, "results", f"{network}-{container_id}-{ifname}")

    def cached(self, network: str, container_id: str, ifname: str) -> CacheEntry | None:
        return read_cache_entry(self.cache_path(network, container_id, ifname), legacy=True)

    def cached_result(self, net: NetworkList, rt: RuntimeConf) -> dict | None:
        """The cached result of (net, rt) in the list's cniVersion, or None. An entry that
        cannot be read or converted is dropped, as libcni's DEL drops it."""
        entry = self.cached(net.name, rt.container_id, rt.ifname)
        if entry is None or not entry.result:
            return None
        wanted = net.cni_version or versions.DEFAULT_VERSION
        try:
            return versions.convert_result(versions.upgrade_result(entry.result, wanted), wanted)
        except CNIError:
            self._cache_del(net.name, rt.container_id, rt.ifname)
            return None

    def cached_attachments(self, network: str | None = None) -> list[CacheEntry]:
        """libcni's GetCachedAttachments: every readable cniCacheV1 entry (of one network)."""
        directory = os.path.join(self.cache_dir, "results")
        try:
            entries = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:  # not root, say
            raise RuntimeFailure(f"cannot read the CNI cache {directory}: {err.strerror}") from None
        found = []
        for name in entries:
            entry = read_cache_entry(os.path.join(directory, name), legacy=False)
            if entry is None or not entry.ifname or not entry.network:
                continue
            if network is None or entry.network == network:
                found.append(entry)
        return found

    def _cache_add(self, net: NetworkList, rt: RuntimeConf, result: dict) -> None:
        doc = {"kind": CACHE_KIND, "containerId": rt.container_id, "config": base64.b64encode(net.raw).decode(),
               "ifName": rt.ifname, "networkName": net.name}
        # Go's omitempty: empty strings, lists and maps are left out
        if rt.netns:
            doc["netns"] = rt.netns
        if rt.args:
            doc["cniArgs"] = rt.args
        if rt.capability_args:
            doc["capabilityArgs"] = rt.capability_args
        if result:
            doc["result"] = result
        path = self.cache_path(net.name, rt.container_id, rt.ifname)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.tmp{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(doc, separators=(",", ":")).encode())
            os.replace(tmp, path)
        except OSError as err:
            raise RuntimeFailure(f"failed to set network {net.name!r} cached result in {path}: {err.strerror}") from None

    def _cache_del(self, network: str, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self.cache_path(network, container_id, ifname))
        except OSError:
            pass


def read_cache_entry(path: str, legacy: bool) -> CacheEntry | None:
    """A cache file as a CacheEntry; None if it is missing or unreadable. `legacy`: also
    accept the pre-cniCacheV1 format (the file is the bare result)."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("kind") != CACHE_KIND:
        if legacy and "cniVersion" in doc:
            return CacheEntry(path, "", "", "", result=doc)
        return None
    config = None
    if isinstance(doc.get("config"), str):
        try:
            config = base64.b64decode(doc["config"])
        except ValueError:
            config = None
    result = doc.get("result") if isinstance(doc.get("result"), dict) else None
    return CacheEntry(
        path, str(doc.get("networkName") or ""), str(doc.get("containerId") or ""), str(doc.get("ifName") or ""),
        str(doc.get("netns") or ""), config, doc.get("cniArgs") or [], doc.get("capabilityArgs") or {}, result,
    )
