"""Tiny fake CNI plugins for the runtime's unit tests: scripts that record what they got.

Each fake is a Python script named after its plugin type. Every exec appends one JSON
line to <dir>/calls.jsonl: the type, CNI_COMMAND, the CNI_* environment and the decoded
stdin. What it answers is set per type in <dir>/<type>.json:
    {"versions": [...],            supportedVersions for VERSION (default: 0.1.0 .. 1.1.0)
     "fail": {"ADD": [7, "msg"]},   exit 1 with this error for these commands
     "ip": "10.0.0.2/24",           ADD appends this address to the result
     "garbage": true}               ADD prints something that is not JSON
ADD answers prevResult (or an empty result) with an interface named after the plugin
appended, so a test sees which plugins ran and that each got the previous result.
"""

import json
import sys
from pathlib import Path

ALL_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

SCRIPT = r'''
import json, os, sys
me = sys.argv[0]
name = os.path.basename(me)
here = os.path.dirname(me)
raw = sys.stdin.read()
conf = json.loads(raw) if raw.strip() else None
command = os.environ.get("CNI_COMMAND", "")
with open(os.path.join(here, "calls.jsonl"), "a") as log:
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
    log.write(json.dumps({"plugin": name, "command": command, "env": env, "conf": conf}) + "\n")
try:
    with open(me + ".json") as f:
        behaviour = json.load(f)
except FileNotFoundError:
    behaviour = {}
version = (conf or {}).get("cniVersion", "1.1.0")
if command == "VERSION":
    print(json.dumps({"cniVersion": "1.1.0", "supportedVersions": behaviour.get("versions", %(versions)r)}))
    sys.exit(0)
if command in behaviour.get("fail", {}):
    code, msg = behaviour["fail"][command]
    print(json.dumps({"cniVersion": version, "code": code, "msg": msg, "details": "from " + name}))
    sys.exit(1)
if command == "ADD":
    if behaviour.get("garbage"):
        print("this is not json")
        sys.exit(0)
    result = dict(conf.get("prevResult") or {"interfaces": [], "ips": []})
    result["cniVersion"] = version
    result["interfaces"] = list(result.get("interfaces") or []) + [{"name": name}]
    if behaviour.get("ip"):
        result["ips"] = list(result.get("ips") or []) + [{"address": behaviour["ip"]}]
    print(json.dumps(result))
'''


class Fakes:
    """A directory of fake plugins and the record of their calls."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def make(self, name: str, **behaviour) -> Path:
        path = self.dir / name
        path.write_text(f"#!{sys.executable}\n" + SCRIPT % {"versions": ALL_VERSIONS})
        path.chmod(0o755)
        self.set(name, **behaviour)
        return path

    def set(self, name: str, **behaviour) -> None:
        (self.dir / f"{name}.json").write_text(json.dumps(behaviour))

    def calls(self, command: str | None = None, skip_version: bool = True) -> list[dict]:
        log = self.dir / "calls.jsonl"
        if not log.exists():
            return []
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        if skip_version:
            calls = [c for c in calls if c["command"] != "VERSION"]
        return [c for c in calls if command is None or c["command"] == command]

    def order(self, command: str | None = None) -> list[tuple[str, str]]:
        return [(c["plugin"], c["command"]) for c in self.calls(command)]

    def reset(self) -> None:
        (self.dir / "calls.jsonl").unlink(missing_ok=True)
