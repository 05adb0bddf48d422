"""The command line of `cni-bridge` (cni_bridge/cli/command.py), in process, against fake
plugins: option placement, targets, exit codes, output. The container netns is our own
(/proc/self/ns/net), so nothing needs root; the kernel work is the fakes' to skip."""

import io
import json
import os

import pytest

from cni_bridge.cli import command
from cni_bridge.cli.runtime import InvalidArgument
from fake_plugins import Fakes

SELF_NETNS = f"/proc/{os.getpid()}/ns/net"


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def setup(tmp_path):
    fakes = Fakes(tmp_path / "plugins")
    fakes.make("first", ip="10.180.0.2/24")
    fakes.make("second")
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-n.conflist").write_text(json.dumps({"cniVersion": "1.1.0", "name": "clinet", "plugins": [
        {"type": "first"}, {"type": "second", "capabilities": {"portMappings": True}}]}))
    return fakes, conf_dir, tmp_path / "cache"


def run(argv, environ=None, out=None, err=None):
    out, err = out or io.StringIO(), err or io.StringIO()
    environ = {"PATH": os.environ.get("PATH", ""), **(environ or {})}
    code = command.main(argv, environ, out, err)
    return code, out.getvalue(), err.getvalue()


def dirs(setup):
    fakes, conf_dir, cache = setup
    return ["--conf-dir", str(conf_dir), "--cache-dir", str(cache), "--plugin-dir", str(fakes.dir)]


def test_add_prints_the_result_and_options_go_before_or_after(setup):
    fakes, _, cache = setup
    code, out, err = run([*dirs(setup), "add", "clinet", SELF_NETNS, "-p", "18100:80", "--id", "c1"])
    assert code == 0, err
    assert json.loads(out)["ips"] == [{"address": "10.180.0.2/24"}]
    assert (cache / "results" / "clinet-c1-eth0").exists()
    code, out, err = run(["add", "clinet", SELF_NETNS, "--id", "c2", "--ifname", "net1", *dirs(setup)])
    assert code == 0, err
    second = [c for c in fakes.calls("ADD") if c["plugin"] == "second"]
    assert second[0]["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 18100, "containerPort": 80, "protocol": "tcp"}]}
    assert second[1]["env"]["CNI_IFNAME"] == "net1"


def test_environment_defaults(setup):
    fakes, conf_dir, cache = setup
    env = {"NETCONFPATH": str(conf_dir), "CNI_CACHE_DIR": str(cache), "CNI_PATH": str(fakes.dir)}
    code, _, err = run(["add", "clinet", SELF_NETNS, "--id", "c1"], env)
    assert code == 0, err
    assert (cache / "results" / "clinet-c1-eth0").exists()


def test_ls_del_and_exit_codes(setup, tmp_path):
    fakes, _, cache = setup
    assert run([*dirs(setup), "add", "clinet", SELF_NETNS, "--id", "live", "-p", "18101:81/udp"])[0] == 0
    gone = tmp_path / "gone-netns"
    gone.write_text("")  # what a runtime leaves: a file that is no netns any more
    entry = json.loads((cache / "results" / "clinet-live-eth0").read_text())
    entry.update(containerId="dead", netns=str(gone))
    (cache / "results" / "clinet-dead-eth0").write_text(json.dumps(entry))

    code, out, _ = run([*dirs(setup), "ls", "--json"])
    rows = {r["containerId"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"live", "dead"}
    assert rows["live"]["stale"] is False and rows["live"]["netnsPresent"] is True
    assert rows["live"]["addresses"] == ["10.180.0.2/24"] and rows["live"]["ports"] == ["18101:81/udp"]
    assert rows["live"]["lease"] is None and rows["live"]["rules"] is None  # no host-local, no rules of ours
    assert rows["dead"]["stale"] is True

    code, out, _ = run([*dirs(setup), "ls"])
    lines = out.splitlines()
    assert lines[0].split() == ["NETWORK", "CONTAINER", "IFNAME", "NETNS", "ADDRESSES", "PORTS", "STATE"]
    assert lines[1].split()[1] == "dead" and lines[1].endswith("stale") and lines[2].endswith("ok")
    assert "\033[" not in out  # no colour off a terminal
    tty = Tty()
    run([*dirs(setup), "ls"], out=tty)
    assert "\033[32mok\033[0m" in tty.getvalue()

    # gc removes the stale one: DEL with no netns, then GC naming the live one as valid
    fakes.reset()
    code, out, _ = run([*dirs(setup), "gc", "clinet"])
    assert code == 0 and "removed stale clinet dead eth0" in out
    assert [c["env"]["CNI_NETNS"] for c in fakes.calls("DEL")] == ["", ""]
    assert fakes.calls("GC")[0]["conf"]["cni.dev/valid-attachments"] == [{"containerID": "live", "ifname": "eth0"}]

    # del by the cached container id's prefix
    code, _, err = run([*dirs(setup), "del", "clinet", "liv"])
    assert code == 0, err
    assert os.listdir(cache / "results") == []
    code, _, err = run([*dirs(setup), "ls"])
    assert code == 0 and "no attachments" in err


def test_a_cache_it_may_not_read_is_an_error_not_a_traceback(setup, monkeypatch):
    """As a user other than root: the cache directory (0700 root's) cannot be listed."""
    (setup[2] / "results").mkdir(parents=True)
    real_listdir = os.listdir

    def listdir(path):
        if str(path).startswith(str(setup[2])):
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    code, out, err = run([*dirs(setup), "ls"])
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"cannot read the CNI cache {setup[2] / 'results'}: Permission denied" in err


def test_del_by_netns_uses_the_cached_id_and_ifname(setup):
    fakes, _, cache = setup
    run([*dirs(setup), "add", "clinet", SELF_NETNS, "--id", "podman123", "--ifname", "eth3"])
    fakes.reset()
    code, _, err = run([*dirs(setup), "del", "clinet", SELF_NETNS])
    assert code == 0, err
    assert {(c["env"]["CNI_CONTAINERID"], c["env"]["CNI_IFNAME"]) for c in fakes.calls("DEL")} == {("podman123", "eth3")}
    assert os.listdir(cache / "results") == []


def test_del_when_the_config_is_gone_uses_the_cached_one(setup):
    fakes, conf_dir, cache = setup
    run([*dirs(setup), "add", "clinet", SELF_NETNS, "--id", "c1"])
    (conf_dir / "10-n.conflist").unlink()
    fakes.reset()
    code, _, err = run([*dirs(setup), "del", "clinet", "c1"])
    assert code == 0, err
    assert [c["plugin"] for c in fakes.calls("DEL")] == ["second", "first"]


def test_failures_and_their_exit_codes(setup, tmp_path):
    fakes, _, _ = setup
    code, _, err = run([*dirs(setup), "add", "nosuchnet", SELF_NETNS])
    assert code == 3 and "no network config named 'nosuchnet'" in err
    code, _, err = run([*dirs(setup), "add", "clinet", str(tmp_path / "nothere")])
    assert code == 4 and "is not a network namespace" in err
    code, _, err = run([*dirs(setup), "add", "clinet", "pid:x"])
    assert code == 2
    code, _, err = run([*dirs(setup), "add", "clinet"])
    assert code == 2 and "TARGET" in err
    fakes.set("second", fail={"ADD": [7, "invalid config"]})
    code, out, err = run([*dirs(setup), "add", "clinet", SELF_NETNS, "--id", "c1"])
    assert code == 1 and out == ""
    assert "plugin second failed (ADD): code 7: invalid config" in err
    assert "undone with DEL, in reverse: second, first" in err
    fakes.set("second", versions=["1.0.0"])
    code, _, err = run([*dirs(setup), "status", "clinet"])
    assert code == 3 and "plugin second" in err and "'1.1.0'" in err
    code, _, _ = run([])
    assert code == 2


def test_help_and_version():
    code, out, _ = run(["add", "--help"])
    assert code == 0 and "NETWORK TARGET" in out and "Exit: 0 ok" in out
    assert len(out.splitlines()) < 30  # short
    code, out, _ = run(["--help"])
    assert code == 0 and "exit codes:" in out and all(c in out for c in ("add", "del", "check", "gc", "status", "ls"))
    code, out, _ = run(["--version"])
    assert code == 0 and out.startswith("cni-bridge (CNI 1.1.0")


@pytest.mark.parametrize("spec, expected", [
    ("8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
    ("53:53/udp", {"hostPort": 53, "containerPort": 53, "protocol": "udp"}),
    ("127.0.0.1:8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}),
    ("[::1]:8080:80/TCP", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "::1"}),
])
def test_port_mappings(spec, expected):
    assert command.parse_port(spec) == expected
    assert command.parse_port(command.format_port(expected)) == expected


@pytest.mark.parametrize("spec", ["80", "a:b", "8080:80/icmp", "0:80", "8080:70000"])
def test_bad_port_mappings(spec):
    with pytest.raises(InvalidArgument):
        command.parse_port(spec)


def test_targets():
    t = command.resolve_target("pid:42", {})
    assert (t.netns, t.container_id) == ("/proc/42/ns/net", "pid-42")
    t = command.resolve_target("/proc/7/ns/net", {})
    assert (t.netns, t.container_id) == ("/proc/7/ns/net", "pid-7")
    t = command.resolve_target("/var/run/netns/web", {})
    assert (t.netns, t.container_id) == ("/var/run/netns/web", "web")
    t = command.resolve_target("nonesuch-ns", {})
    assert (t.netns, t.container_id) == ("/run/netns/nonesuch-ns", "nonesuch-ns")


def test_docker_target(tmp_path):
    """docker:NAME asks `docker inspect` for the id and the SandboxKey."""
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\n[ "$1 $4" = "inspect web" ] || { echo "No such object: $4" >&2; exit 1; }\n'
                    'echo "0123456789abcdef /var/run/docker/netns/1a2b3c"\n')
    fake.chmod(0o755)
    t = command.resolve_target("docker:web", {"PATH": str(tmp_path)})
    assert (t.netns, t.container_id) == ("/var/run/docker/netns/1a2b3c", "0123456789abcdef")
    with pytest.raises(command.TargetError, match="No such object: db"):
        command.resolve_target("docker:db", {"PATH": str(tmp_path)})


def test_own_directory(tmp_path):
    """The plugin dir next to the executable: the dir holding .cni-bridge/ for a build."""
    bundle = tmp_path / "bin" / ".cni-bridge"
    bundle.mkdir(parents=True)
    (bundle / "cni-bridge").write_text("")
    (tmp_path / "bin" / "cni-bridge").symlink_to(".cni-bridge/cni-bridge")
    (tmp_path / "usr-local-bin").mkdir()
    (tmp_path / "usr-local-bin" / "cni-bridge").symlink_to(tmp_path / "bin" / "cni-bridge")
    assert command.own_directory(str(tmp_path / "usr-local-bin" / "cni-bridge")) == str(tmp_path / "bin")
    assert command.own_directory(str(tmp_path / "wrapper-dir" / "cni-bridge")) == str(tmp_path / "wrapper-dir")


def test_entries_without_netns_use_the_results_sandbox(setup, tmp_path):
    """libcni before 1.2 (containerd 1.6, podman 4) cached no netns: the result's sandbox
    says where the attachment is; with neither, the attachment is never called stale."""
    fakes, _, cache = setup
    run([*dirs(setup), "add", "clinet", SELF_NETNS, "--id", "seed"])
    seed = json.loads((cache / "results" / "clinet-seed-eth0").read_text())
    del seed["netns"]
    podman_like = dict(seed, containerId="pod1",
                       result={**seed["result"], "interfaces": [{"name": "eth0", "sandbox": str(tmp_path / "gone")}]})
    unknown = dict(seed, containerId="old1", result={"cniVersion": "1.1.0", "ips": []})
    for doc in (podman_like, unknown):
        (cache / "results" / f"clinet-{doc['containerId']}-eth0").write_text(json.dumps(doc))
    (cache / "results" / "clinet-seed-eth0").unlink()
    rows = {r["containerId"]: r for r in json.loads(run([*dirs(setup), "ls", "--json"])[1])}
    assert rows["pod1"]["netns"] == str(tmp_path / "gone") and rows["pod1"]["stale"] is True
    assert rows["old1"]["netns"] == "" and rows["old1"]["netnsPresent"] is None and rows["old1"]["stale"] is False
    assert "netns unknown" in run([*dirs(setup), "ls"])[1]
    code, out, _ = run([*dirs(setup), "gc", "clinet"])
    assert code == 0 and "pod1" in out and "old1" not in out
    assert os.listdir(cache / "results") == ["clinet-old1-eth0"]


def test_the_program_name_cni_bridge_runs_the_command_not_the_bridge_plugin():
    """"cni-bridge" ends with "-bridge", which would pick the bridge plugin: main checks
    the command's name first."""
    import subprocess
    import sys
    from pathlib import Path

    from cni_bridge.suite import PLUGINS, plugin_for

    assert plugin_for("cni-bridge") == "bridge" and "cni-bridge" not in PLUGINS
    root = Path(__file__).resolve().parents[3]
    code = "import sys; sys.argv[0] = '/somewhere/cni-bridge'; from cni_bridge.main import main; main()"
    proc = subprocess.run([sys.executable, "-P", "-c", code, "--version"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("cni-bridge (CNI 1.1.0"), proc
