"""The fuzzer's cases, and the worker that runs them inside a node namespace.

A case is a plugin, an environment and a stdin: a valid config of ours mutated (types,
ranges, unicode, huge values, deep nesting, missing and duplicate keys, bad CIDRs, broken
bytes) with an environment mutated too (bad UTF-8, control characters, long values, odd
CNI_ARGS). Case i of seed S is always the same case, so a finding is repeated with
`make_case(S, i, sandbox)`.

The worker (`python fuzz_cases.py PLAN`, started by test_fuzz.py with `ip netns exec`)
runs most cases in process through skel.dispatch and every EXEC_EVERY-th through the real
executable, and asserts for each: no traceback, only plain log lines on stderr, the spec's
error JSON for every failure, and nothing left by it: no lease file, no veth, no container
interface, no element in our nftables sets. A successful ADD is DELeted at once, and that
DEL must leave nothing either. Everything is read with independent tools (`ip -j`,
`nft -j`, the files).

What a case may touch is fenced in, since the node namespace does not fence the file
system: dataDir, resolvConf and CNI_NETNS come from lists of paths inside the sandbox (a
config that would fall back to the default dataDir is made again), IPAM types and CNI_PATH
from lists of harmless ones.
"""

import copy
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

SUPPORTED_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}
NETWORK = "hxfuzz"
CONTAINER_ID = "hxfuzz1"
MAX_MUTATED_DEPTH = 8
TIME_LIMIT = 20  # seconds: a case that takes longer hangs (a plugin exec takes well under one)


class Sandbox:
    """Where cases may write and what they may name: built from the plan."""

    def __init__(self, plan: dict):
        self.root = plan["root"]
        self.data_dir = os.path.join(self.root, "data")
        self.netns = plan["netns"]  # the one container namespace's path
        self.bin_dir = plan["bin_dir"]
        self.fifo = os.path.join(self.root, "fifo")
        self.plain_file = os.path.join(self.root, "plain")
        self.data_dirs = [
            self.data_dir, os.path.join(self.data_dir, "ünïcödé"), "relative-data", "./rel/../rel2",
            os.path.join(self.data_dir, "x" * 300), os.path.join(self.data_dir, "d/" * 2100),
        ]


# ---- the cases -------------------------------------------------------------------------


def base_configs(box: Sandbox) -> list[tuple[str, dict]]:
    """(plugin, config): valid configs of every plugin, the starting points of mutation."""
    ranges = [[{"subnet": "10.183.64.0/24", "rangeStart": "10.183.64.10", "rangeEnd": "10.183.64.200",
                "gateway": "10.183.64.1"}], [{"subnet": "fd1b:0:40::/64"}]]
    routes = [{"dst": "0.0.0.0/0"}, {"dst": "fd1b:0:41::/64", "gw": "fd1b:0:40::1", "mtu": 1400, "priority": 10}]
    host_local = {"type": "host-local", "dataDir": box.data_dir, "ranges": ranges, "routes": routes}
    legacy = {"type": "host-local", "dataDir": box.data_dir, "subnet": "10.183.65.0/24", "rangeStart": "10.183.65.5",
              "gateway": "10.183.65.1", "resolvConf": os.path.join(box.root, "resolv.conf")}
    bridge = {"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "bridge": "hxf0", "isGateway": True,
              "isDefaultGateway": True, "ipMasq": True, "mtu": 1400, "hairpinMode": True,
              "ipam": {**host_local, "ranges": [[{"subnet": "10.183.66.0/24"}], [{"subnet": "fd1b:0:42::/64"}]],
                       "routes": [{"dst": "fd1b:0:41::/64", "gw": "fd1b:0:42::1", "mtu": 1400, "priority": 10}]}}
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "hxf0"}, {"name": "veth0"}, {"name": "eth0",
            "sandbox": box.netns, "mac": "0a:58:0a:b7:42:05"}],
            "ips": [{"address": "10.183.66.2/24", "gateway": "10.183.66.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.183.66.1"}]}
    return [
        ("host-local", {"cniVersion": "1.1.0", "name": NETWORK, "type": "host-local", "ipam": host_local}),
        ("host-local", {"cniVersion": "0.3.1", "name": NETWORK, "type": "host-local", "ipam": legacy,
                        "args": {"cni": {"ips": ["10.183.65.9"]}}}),
        ("bridge", bridge),
        ("bridge", {**bridge, "cniVersion": "1.1.0", "macspoofchk": True, "hairpinMode": False, "promiscMode": True,
                    "runtimeConfig": {"ips": ["10.183.66.50/24"], "mac": "0a:58:0a:b7:42:32"},
                    "cni.dev/valid-attachments": [{"containerID": CONTAINER_ID, "ifname": "eth0"}]}),
        ("bridge", {**bridge, "cniVersion": "0.4.0", "prevResult": prev, "vlan": 0, "forceAddress": True,
                    "dns": {"nameservers": ["10.183.66.1"], "search": ["hx.test"]}}),
        ("bridge", {**bridge, "ipMasq": False, "isDefaultGateway": False, "ipam": legacy}),
        ("loopback", {"cniVersion": "1.1.0", "name": "hxlo", "type": "loopback"}),
        ("portmap", {"cniVersion": "1.0.0", "name": NETWORK, "type": "portmap", "snat": True,
                     "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
                                                        {"hostPort": 18053, "containerPort": 53, "protocol": "udp",
                                                         "hostIP": "10.183.66.1"}]},
                     "prevResult": {**prev, "ips": [*prev["ips"], {"address": "fd1b:0:42::2/64", "interface": 2}]}}),
    ]


def _deep(depth: int):
    value = "leaf"
    for _ in range(depth):
        value = [value]
    return value


NUMBERS = [0, -1, 1, 68, 127, 128, 255, 256, 4094, 4095, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
           2**63, 2**64, 10**30, 10**4000, 1.5, -0.0, 1e308, True, False]
TEXTS = ["", " ", "é", "😀", "\u202e", "\u0000", "\x1b[31m", "a\nb", "a" * 16, "a" * 70000, "10.183.64.0/24",
         "10.183.64.0/33", "10.183.64.5", "10.183.64.256", "fd1b:0:40::/129", "fd1b:0:40::/64/1", "::", "0.0.0.0/0",
         " 10.183.64.0/24", "10.183.64.0/24\n", "1.2.3.4/-1", "1.2.3.4/0x18", "10.183.64.0/²", "fe80::1%eth0",
         "::ffff:10.183.64.5", "10.183.64.1/24", "0a:58:0a:b7:42:05", "ff:ff:ff:ff:ff:ff", "../../etc/passwd",
         "hxf1", "cni0", "1.1.0", "9.9.9", "host-local", "bridge"]
SHAPES = [None, [], {}, [[]], {"": ""}, [1, "a"], [{"subnet": "10.183.64.0/24"}], _deep(150), _deep(300),
          [{"hostPort": 18081, "containerPort": 81}], {"HostPort": 18082, "ContainerPort": 82, "Protocol": "sctp"}]
IPAM_TYPES = ["host-local", "bridge", "loopback", "cni-bridge", "cnib-host-local", "static", "", "../host-local",
              "/usr/lib/cni/host-local", "host-local\u0000", 5, None]
COMMANDS = ["ADD"] * 10 + ["DEL"] * 3 + ["CHECK"] * 3 + ["GC", "STATUS", "VERSION"]
# Odd values of each variable, one or two of which replace the valid ones in half the cases.
ODD_ENV = {
    "CNI_COMMAND": ["add", "", "ADD\udcff", "DEL ", "VERSIONS", "ADD\x07"],
    "CNI_CONTAINERID": ["", "a" * 255, "a" * 256, "../x", "x\udcff", "x\n", "-x", "ab c", "é"],
    "CNI_IFNAME": ["net1", "", "a" * 15, "a" * 16, "é" * 7, "é" * 8, "eth0\udcff", "eth\x01", "..", "a/b", "eth 0",
                   "lo", "eth0:1", "eth\x85"],
    "CNI_NETNS": ["", "/nonexistent/netns", "PLAIN", "ROOT", "FIFO", "NETNS\udcff", "NETNS\x07", "/" + "n" * 5000],
    "CNI_PATH": ["BIN", "", "/usr/lib/cni", "ROOT:/nonexistent", "/" + "p" * 5000, "/nonexistent\udcff", "/a\t"],
    "CNI_ARGS": [
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=x", "IP=10.183.64.77",
        "IP=10.183.66.77", "IP=fd1b:0:40::77,10.183.64.78", "IP=../../x", "IP=10.183.64.77/24", "IP=10.183.64.1",
        "MAC=0a:58:0a:b7:42:06", "MAC=zz", "MAC=01:00:5e:00:00:01", "FOO=1", "A=B=C", ";;;", "IgnoreUnknown=maybe",
        "IgnoreUnknown=1;" + "K=V;" * 5000, "IP=\x1b", "IP=10.183.64.7\udcff", "IgnoreUnknown=1;K8S_POD_NAME=é😀",
    ],
}


def make_case(seed: int, index: int, box: Sandbox) -> dict:
    """Case `index` of `seed`: {"plugin", "env", "stdin", "mutations"} (made again until it
    writes inside the sandbox only)."""
    for attempt in range(100):
        rng = random.Random(f"{seed}:fuzz:{index}:{attempt}")
        case = _make_case(rng, box)
        if writes_inside(case["stdin"], box):
            return case
    raise RuntimeError(f"no case {index} of seed {seed} stays inside the sandbox")


def _make_case(rng: random.Random, box: Sandbox) -> dict:
    plugin, conf = rng.choice(base_configs(box))
    conf = json.loads(json.dumps(conf))
    mutations = []
    duplicates = []
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 4])):
        mutations.append(_mutate(rng, conf, box, duplicates))
    stdin = _serialize(conf, duplicates, rng)
    if rng.random() < 0.08:
        stdin, what = _break_bytes(rng, stdin)
        mutations.append(what)
    env = {"CNI_COMMAND": rng.choice(COMMANDS), "CNI_CONTAINERID": CONTAINER_ID, "CNI_IFNAME": "eth0",
           "CNI_NETNS": box.netns, "CNI_PATH": "/nonexistent"}
    if rng.random() < 0.5:
        for variable in rng.sample(sorted(ODD_ENV), rng.choice([1, 1, 2])):
            env[variable] = _place(rng.choice(ODD_ENV[variable]), box)
            mutations.append(f"{variable}={env[variable]!r:.40}")
    return {"plugin": plugin, "env": env, "stdin": stdin, "mutations": mutations}


def _place(value: str, box: Sandbox) -> str:
    """An odd value with the sandbox's paths put in."""
    for word, path in (("PLAIN", box.plain_file), ("ROOT", box.root), ("FIFO", box.fifo), ("NETNS", box.netns),
                       ("BIN", box.bin_dir)):
        value = value.replace(word, path)
    return value


def _paths(value, prefix=()):
    """Every (path, container) in a config tree down to MAX_MUTATED_DEPTH, for picking what
    to mutate (below that, nested mutations would compound beyond any decoder's limit)."""
    yield prefix, value
    if len(prefix) >= MAX_MUTATED_DEPTH:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, prefix + (index,))


def _mutate(rng: random.Random, conf: dict, box: Sandbox, duplicates: list) -> str:
    paths = [p for p in _paths(conf) if 0 < len(p[0]) <= MAX_MUTATED_DEPTH]
    if not paths:  # every key deleted already
        conf["cniVersion"] = rng.choice(TEXTS)
        return "cniVersion put back"
    path, _ = rng.choice(paths)
    parent = conf
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    if key == "dataDir":
        parent[key] = rng.choice(box.data_dirs + [5, [box.data_dir], {"a": 1}, True])
        return f"{'.'.join(map(str, path))} = {parent[key]!r:.60}"
    if key == "resolvConf":
        parent[key] = rng.choice([box.fifo, box.root, "/nonexistent", box.plain_file, os.path.join(box.root, "é")])
        return f"{'.'.join(map(str, path))} = {parent[key]!r}"
    if key == "type" and len(path) == 2 and path[0] == "ipam":
        parent[key] = rng.choice(IPAM_TYPES)
        return f"ipam.type = {parent[key]!r}"
    operation = rng.choice(["number", "number", "text", "text", "shape", "delete", "unknown", "duplicate", "nest"])
    if operation == "delete" and isinstance(parent, dict):
        del parent[key]
        return f"del {'.'.join(map(str, path))}"
    if operation == "unknown" and isinstance(parent, dict):
        parent[rng.choice(["extra", "Mtu", "ipMasq ", "é"])] = rng.choice(NUMBERS + TEXTS[:10])
        return f"unknown key in {'.'.join(map(str, path[:-1]))}"
    if operation == "duplicate" and isinstance(parent, dict):
        duplicates.append((id(parent), key, copy.deepcopy(rng.choice(NUMBERS[:12] + TEXTS[:16] + SHAPES[:6])),
                           rng.random() < 0.5))
        return f"duplicate {'.'.join(map(str, path))}"
    if operation == "nest":
        parent[key] = _deep(rng.choice([1, 5, 150, 250])) if rng.random() < 0.5 else [parent[key]]
        return f"nest {'.'.join(map(str, path))}"
    pool = {"number": NUMBERS, "text": TEXTS, "shape": SHAPES}.get(operation, TEXTS)
    parent[key] = copy.deepcopy(rng.choice(pool))  # a shared list put inside itself would be a cycle
    return f"{'.'.join(map(str, path))} = {parent[key]!r:.60}"


def _serialize(conf, duplicates, rng: random.Random) -> bytes:
    """JSON text of conf, with the chosen keys written twice (before or after the real one),
    numbers too large for json.dumps' defaults written as they are."""
    chosen = {}
    for parent_id, key, value, after in duplicates:
        chosen.setdefault(parent_id, []).append((key, value, after))

    def write(value) -> str:
        if isinstance(value, dict):
            items = []
            for key, child in value.items():
                extra = [(k, v, after) for k, v, after in chosen.get(id(value), []) if k == key]
                items += [f"{json.dumps(k)}: {write(v)}" for k, v, after in extra if not after]
                items.append(f"{json.dumps(key)}: {write(child)}")
                items += [f"{json.dumps(k)}: {write(v)}" for k, v, after in extra if after]
            return "{" + ", ".join(items) + "}"
        if isinstance(value, list):
            return "[" + ", ".join([write(child) for child in value]) + "]"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**300:
            return str(value)  # json.dumps would refuse more than 4300 digits; the plugin must too
        return json.dumps(value, ensure_ascii=rng.random() < 0.5)

    return write(conf).encode("utf-8", "surrogatepass")


def _break_bytes(rng: random.Random, stdin: bytes) -> tuple[bytes, str]:
    where = rng.randrange(len(stdin) + 1)
    choice = rng.choice(["truncate", "flip", "invalid utf-8", "bom", "garbage", "nul"])
    if choice == "truncate":
        return stdin[:where], f"truncated at {where}"
    if choice == "flip" and stdin:
        where = min(where, len(stdin) - 1)
        return stdin[:where] + bytes([stdin[where] ^ (1 << rng.randrange(8))]) + stdin[where + 1:], f"bit flip at {where}"
    if choice == "invalid utf-8":
        return stdin[:where] + b"\xff\xc3" + stdin[where:], f"invalid UTF-8 at {where}"
    if choice == "bom":
        return b"\xef\xbb\xbf" + stdin, "BOM"
    if choice == "nul":
        return stdin[:where] + b"\x00" + stdin[where:], f"NUL at {where}"
    return stdin + b" {}", "trailing garbage"


def writes_inside(stdin: bytes, box: Sandbox) -> bool:
    """Whether host-local (ours or the reference) could only write inside the sandbox with
    this config: a dataDir that is missing or empty would mean /var/lib/cni/networks."""
    try:
        conf = json.loads(stdin)
    except (ValueError, RecursionError):
        return True  # not JSON, or nested beyond what any decoder here takes: nobody gets to write
    if not isinstance(conf, dict) or not isinstance(conf.get("ipam"), dict):
        return True
    data_dir = conf["ipam"].get("dataDir")
    if isinstance(data_dir, str):
        return data_dir in box.data_dirs
    return bool(data_dir)  # a number, list or object: refused as the wrong type, by both


# ---- the worker ---------------------------------------------------------------------------


class Finding(Exception):
    pass


class Hung(BaseException):
    """Raised by the alarm in a case that runs too long: not an Exception, so that no
    handler of the plugin's takes it for an ordinary failure."""


def main(plan_path: str) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    box = Sandbox(plan)
    sys.setrecursionlimit(10_000)  # for writing the deeply nested cases
    os.chdir(box.root)  # relative dataDirs land in the sandbox
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a plugin exits after one command; we do not
    from cni_bridge.cni import skel
    from cni_bridge.suite import PLUGINS

    plugins = {name: __import__(module, fromlist=["PLUGIN"]).PLUGIN for name, module in PLUGINS.items()}
    report = {"cases": 0, "execs": 0, "outcomes": {}, "findings": [], "seconds": 0.0}
    started = time.monotonic()
    for index in range(plan["start"], plan["start"] + plan["count"]):
        case = make_case(plan["seed"], index, box)
        through_exec = index % plan["exec_every"] == 0
        try:
            outcome = run_case(case, box, plugins, skel, through_exec)
            key = f"{case['env'].get('CNI_COMMAND', '')!r} -> {outcome}"
            report["outcomes"][key] = report["outcomes"].get(key, 0) + 1
        except Finding as finding:
            report["findings"].append({"index": index, "finding": str(finding), "exec": through_exec,
                                       "case": _shown_case(case)})
            clean_up(box)
        report["cases"] += 1
        report["execs"] += through_exec
    report["seconds"] = time.monotonic() - started
    with open(plan["report"], "w") as f:
        json.dump(report, f)


def run_case(case: dict, box: Sandbox, plugins: dict, skel, through_exec: bool) -> str:
    """Run one case and everything its outcome asks for; return the outcome in words, raise
    Finding for what is wrong."""
    command = case["env"].get("CNI_COMMAND", "")
    code, out, err = (exec_case if through_exec else dispatch_case)(case, box, plugins, skel)
    check_output(command, code, out, err)
    outcome = "ok" if code == 0 else f"error {json.loads(out)['code']}"
    if command == "ADD" and code == 0:
        deleted = dict(case, env={**case["env"], "CNI_COMMAND": "DEL"})
        del_code, del_out, del_err = dispatch_case(deleted, box, plugins, skel)
        check_output("DEL", del_code, del_out, del_err)
        if del_code != 0:
            raise Finding(f"the DEL after a successful ADD failed: {del_out.decode(errors='replace')}")
    left = leftovers(box, kernel=command == "ADD")
    if left:
        raise Finding(f"{'ADD and its DEL' if command == 'ADD' and code == 0 else command} left {left}")
    return outcome


def dispatch_case(case: dict, box: Sandbox, plugins: dict, skel) -> tuple[int, bytes, str]:
    """In process, with fd 2 captured and a bound on the time a case may take."""
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("CNI_")}, **case["env"]}
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.path.join(box.root, "stderr"), "w+b") as capture:
        os.dup2(capture.fileno(), 2)
        signal.signal(signal.SIGALRM, _hung)
        signal.alarm(TIME_LIMIT)
        try:
            code, out = skel.dispatch(plugins[case["plugin"]], environ, case["stdin"])
        except BaseException as err:  # the executable would print a traceback here
            raise Finding(f"exception escaped dispatch: {err!r}") from None
        finally:
            signal.alarm(0)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        err = capture.read().decode(errors="replace")
    return code, out, err


def _hung(signum, frame):
    raise Hung(f"the case ran for {TIME_LIMIT} s")


def exec_case(case: dict, box: Sandbox, plugins: dict, skel) -> tuple[int, bytes, str]:
    """Through the real executable, as a runtime runs it."""
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("CNI_")}, **case["env"]}
    try:
        proc = subprocess.run([os.path.join(box.bin_dir, case["plugin"])], input=case["stdin"], env=environ,
                              capture_output=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        raise Finding(f"the executable ran for {TIME_LIMIT} s") from None
    out = proc.stdout.strip()
    return proc.returncode, out, proc.stderr.decode(errors="replace")


def check_output(command: str, code: int, out: bytes, err: str) -> None:
    if "Traceback" in err or any(line.startswith("  File ") for line in err.splitlines()):
        raise Finding(f"a traceback on stderr: {err[-2000:]}")
    if "internal error" in err:
        raise Finding(f"an exception we did not expect: {err.strip()[-500:]}")
    try:
        text = out.decode("utf-8")
        parsed = json.loads(text) if text.strip() else None
    except ValueError as bad:
        raise Finding(f"stdout is not UTF-8 JSON ({bad}): {out[:500]!r}") from None
    if code == 0:
        wants_output = command in ("ADD", "VERSION")
        if wants_output != isinstance(parsed, dict):
            raise Finding(f"success of {command!r} with stdout {out[:300]!r}")
        if wants_output and parsed.get("cniVersion") not in SUPPORTED_VERSIONS:
            raise Finding(f"a result without a cniVersion we speak: {out[:300]!r}")
        return
    if code != 1:
        raise Finding(f"exit code {code}, stdout {out[:300]!r}, stderr {err[-500:]!r}")
    problems = []
    if not isinstance(parsed, dict):
        problems.append("not an object")
    else:
        if not set(parsed) <= {"cniVersion", "code", "msg", "details"}:
            problems.append(f"keys {sorted(parsed)}")
        if parsed.get("cniVersion") not in SUPPORTED_VERSIONS:
            problems.append("cniVersion")
        if type(parsed.get("code")) is not int or not (parsed["code"] in SPEC_CODES or parsed["code"] >= 100):
            problems.append("code")
        if not isinstance(parsed.get("msg"), str) or not parsed["msg"]:
            problems.append("msg")
        if not isinstance(parsed.get("details", ""), str):
            problems.append("details")
        if str(parsed.get("msg", "")).startswith("internal error"):
            problems.append("the catch-all for exceptions we did not expect")
    if problems:
        raise Finding(f"error output that is not the spec's error JSON ({', '.join(problems)}): {out[:500]!r}")


def _run(*cmd) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


def leftovers(box: Sandbox, kernel: bool) -> dict:
    """What is left that nothing may leave: lease files under the sandbox, and (kernel=True)
    veths in the node, links in the container, elements in our nftables sets."""
    left = {}
    leases = [os.path.join(root, name) for root, _, files in os.walk(box.root) for name in files
              if _is_lease(root, name, box)]
    if leases:
        left["leases"] = leases
    if kernel:
        veths = [link["ifname"] for link in json.loads(_run("ip", "-j", "link", "show", "type", "veth") or "[]")]
        if veths:
            left["veths"] = veths
        container = [link["ifname"] for link in json.loads(_run("nsenter", f"--net={box.netns}", "ip", "-j", "link",
                                                                "show") or "[]") if link["ifname"] != "lo"]
        if container:
            left["container links"] = container
        listing = json.loads(_run("nft", "-j", "list", "ruleset"))["nftables"]
        elements = [item for item in listing for kind in ("map", "set") if item.get(kind, {}).get("elem")]
        if elements:
            left["nft elements"] = elements
    return left


def _is_lease(root: str, name: str, box: Sandbox) -> bool:
    """A file host-local leaves only for a lease: not its lock, hint, or the sandbox's own files."""
    if root == box.root:
        return False  # the FIFO, the plain file, resolv.conf, the captured stderr, the plan
    return name != "lock" and not name.startswith("last_reserved_ip.")


def clean_up(box: Sandbox) -> None:
    """After a finding: take away what the case left, so that the next case starts clean."""
    for root, _, files in os.walk(box.root):
        for name in files:
            if _is_lease(root, name, box):
                os.unlink(os.path.join(root, name))
    for link in json.loads(_run("ip", "-j", "link", "show", "type", "veth") or "[]"):
        subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True)
    for link in json.loads(_run("nsenter", f"--net={box.netns}", "ip", "-j", "link", "show") or "[]"):
        if link["ifname"] != "lo":
            subprocess.run(["nsenter", f"--net={box.netns}", "ip", "link", "del", link["ifname"]], capture_output=True)
    for item in json.loads(_run("nft", "-j", "list", "ruleset"))["nftables"]:
        for kind in ("map", "set"):
            if item.get(kind, {}).get("elem"):
                body = item[kind]
                subprocess.run(["nft", "flush", kind, body["family"], body["table"], body["name"]], capture_output=True)


def _shown_case(case: dict) -> dict:
    return {"plugin": case["plugin"], "env": {k: repr(v)[:200] for k, v in case["env"].items()},
            "stdin": repr(case["stdin"][:600]), "mutations": case["mutations"]}


if __name__ == "__main__":
    main(sys.argv[1])
