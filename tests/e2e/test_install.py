"""scripts/install into a throwaway plugin dir: drop-in and side by side, upgrades, and the
installed names used the way a runtime uses them (VERSION, host-local ADD/DEL).

Works on a private copy of build/bin (scripts/install honours CNI_BRIDGE_BIN), so a
parallel rebuild of build/bin cannot change what is installed mid-test.
"""

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from plugin_runner import exec_plugin, lease_files

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install"
REFERENCE = Path("/usr/lib/cni")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    if not (src / ".cni-bridge" / "cni-bridge").exists():
        pytest.skip(f"{src} has no build: run scripts/build first")
    copy = tmp_path_factory.mktemp("built") / "bin"
    shutil.copytree(src, copy, symlinks=True)
    return copy


def install(built: Path, *args, check=True) -> subprocess.CompletedProcess:
    """scripts/install; never onto the real PATH unless a test names a --bin-dir."""
    if not any(str(a).startswith("--bin-dir") for a in args):
        args = (*args, "--bin-dir", "")
    env = dict(os.environ, CNI_BRIDGE_BIN=str(built))
    proc = subprocess.run([str(INSTALL), *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


def version(executable: Path) -> dict:
    res = exec_plugin(executable, "VERSION")
    assert res.code == 0, res
    return res.out


def reference_plugins(directory: Path) -> dict[str, bytes]:
    """Put copies of the reference bridge/host-local/portmap/firewall in directory; return their bytes."""
    if not (REFERENCE / "bridge").exists():
        pytest.skip("reference plugins absent (Debian package containernetworking-plugins)")
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("bridge", "host-local", "portmap", "firewall"):
        shutil.copy2(REFERENCE / name, directory / name)
        out[name] = (REFERENCE / name).read_bytes()
    return out


def builds(directory: Path) -> list[str]:
    home = directory / ".cni-bridge"
    return sorted(p.name for p in home.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in ("replaced", "_internal"))


def assert_ours(directory: Path, name: str, built: Path):
    link = directory / name
    assert link.is_symlink(), f"{name} is not a link"
    assert os.readlink(link) == ".cni-bridge/cni-bridge"  # relative: the dir can move
    exe = link.resolve()
    assert exe.parent.parent == (directory / ".cni-bridge").resolve()
    assert exe.read_bytes() == (built / ".cni-bridge" / "cni-bridge").read_bytes()
    assert version(link)["supportedVersions"][-1] == "1.1.0"


def test_drop_in(tmp_path, built):
    plugins = tmp_path / "opt-cni-bin"
    originals = reference_plugins(plugins)
    proc = install(built, plugins)
    assert "drop-in" in proc.stdout and str(plugins) in proc.stdout
    for name in ("bridge", "host-local", "portmap"):
        assert_ours(plugins, name, built)
        # the replaced reference binary is kept for going back
        assert (plugins / ".cni-bridge" / "replaced" / name).read_bytes() == originals[name]
    assert (plugins / "firewall").read_bytes() == originals["firewall"]  # others untouched
    assert len(builds(plugins)) == 1

    # the same build again: nothing copied, still working, the kept originals unchanged
    proc = install(built, plugins)
    assert "already" in proc.stdout
    assert len(builds(plugins)) == 1
    assert (plugins / ".cni-bridge" / "replaced" / "bridge").read_bytes() == originals["bridge"]
    for name in ("bridge", "host-local"):
        assert_ours(plugins, name, built)


def test_side_by_side(tmp_path, built):
    plugins = tmp_path / "opt-cni-bin"
    originals = reference_plugins(plugins)
    proc = install(built, plugins, "--side-by-side")
    assert "side by side" in proc.stdout
    for name in ("cnib-bridge", "cnib-host-local", "cnib-portmap"):
        assert_ours(plugins, name, built)
    for name, data in originals.items():  # the reference plugins stay as they were
        assert not (plugins / name).is_symlink()
        assert (plugins / name).read_bytes() == data
    assert not (plugins / ".cni-bridge" / "replaced").exists()
    # the reference ones still answer as themselves
    assert version(plugins / "bridge")["supportedVersions"]


def test_installed_host_local_allocates(tmp_path, built):
    """ADD and DEL through the side-by-side name, as a runtime would exec it."""
    plugins = tmp_path / "bin"
    reference_plugins(plugins)
    install(built, plugins, "--side-by-side")
    data = tmp_path / "leases"
    conf = {
        "cniVersion": "1.0.0", "name": "inst", "type": "cnib-bridge",
        "ipam": {"type": "cnib-host-local", "dataDir": str(data), "ranges": [[{"subnet": "10.213.250.0/29"}]]},
    }
    env = dict(container_id="inst-1", netns="/nonexistent", CNI_PATH=str(plugins))
    add = exec_plugin(plugins / "cnib-host-local", "ADD", conf, **env)
    assert add.code == 0, add
    assert [ip["address"] for ip in add.out["ips"]] == ["10.213.250.2/29"]
    assert lease_files(data / "inst") == {"10.213.250.2": "inst-1\r\neth0"}
    delete = exec_plugin(plugins / "cnib-host-local", "DEL", conf, **env)
    assert delete.code == 0, delete
    assert lease_files(data / "inst") == {}


def _variant(built: Path, tmp_path: Path, tag: str) -> Path:
    """A copy of the build whose contents (so build id) differ."""
    other = tmp_path / f"build-{tag}"
    shutil.copytree(built, other, symlinks=True)
    (other / ".cni-bridge" / "_internal" / f"variant-{tag}").write_text(tag)
    return other


def test_upgrade_is_atomic_and_keeps_the_previous_build(tmp_path, built):
    plugins = tmp_path / "bin"
    install(built, plugins)
    first = builds(plugins)
    assert len(first) == 1

    # Exec the installed plugins continuously while another build is installed: every
    # exec must run a complete build (old or new).
    stop = threading.Event()
    failures, runs = [], []

    def hammer(name):
        while not stop.is_set():
            res = subprocess.run([str(plugins / name)], env={"CNI_COMMAND": "VERSION"},
                                 stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            runs.append(name)
            if res.returncode != 0 or b"supportedVersions" not in res.stdout:
                failures.append((name, res.returncode, res.stdout, res.stderr))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in ("bridge", "host-local")]
    for t in threads:
        t.start()
    try:
        second = _variant(built, tmp_path, "b")
        install(second, plugins)
        third = _variant(built, tmp_path, "c")
        install(third, plugins)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert runs, "the plugins never ran during the install"
    assert not failures, failures[:3]

    # the current build and the one before it are kept, the first one is gone
    now = builds(plugins)
    assert len(now) == 2 and first[0] not in now
    current = os.readlink(plugins / ".cni-bridge" / "cni-bridge").split("/")[0]
    assert (plugins / ".cni-bridge" / current / "_internal" / "variant-c").exists()
    assert not list((plugins / ".cni-bridge").glob(".staging-*"))
    for name in ("bridge", "host-local"):
        assert version(plugins / name)


def test_over_a_plain_copy_of_build_bin(tmp_path, built):
    """The README's `cp -a build/bin/. DIR` layout is taken over by an install."""
    plugins = tmp_path / "bin"
    shutil.copytree(built, plugins, symlinks=True)
    install(_variant(built, tmp_path, "new"), plugins)
    for name in ("bridge", "host-local"):
        assert version(plugins / name)
        assert (plugins / name).resolve().parent.name != ".cni-bridge"  # now in a build dir
    # the old in-place bundle's libraries stay until the next install (a start in flight
    # may be loading them) ...
    assert (plugins / ".cni-bridge" / "_internal").is_dir()
    install(built, plugins)
    # ... and then go
    assert not (plugins / ".cni-bridge" / "_internal").exists()
    assert len(builds(plugins)) == 2
    for name in ("bridge", "host-local"):
        assert_ours(plugins, name, built)


def test_the_command_is_installed_and_put_on_the_path(tmp_path, built):
    plugins, bin_dir = tmp_path / "opt-cni-bin", tmp_path / "usr-local-bin"
    proc = install(built, plugins, "--side-by-side", "--bin-dir", bin_dir)
    assert os.readlink(plugins / "cni-bridge") == ".cni-bridge/cni-bridge"
    assert os.readlink(bin_dir / "cni-bridge") == str(plugins.resolve() / "cni-bridge")
    assert f"{bin_dir}/cni-bridge -> " in proc.stdout
    res = subprocess.run([str(bin_dir / "cni-bridge"), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("cni-bridge (CNI 1.1.0"), res
    # the command run through the PATH link finds the plugins in the install's DIR
    res = subprocess.run([str(bin_dir / "cni-bridge"), "--plugin-dir", "", "status", "nonet", "--conf-dir", tmp_path],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and "no network config named 'nonet'" in res.stderr
    conf = tmp_path / "n.conf"
    conf.write_text(json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "cnib-host-local", "ipam": {
        "type": "cnib-host-local", "dataDir": str(tmp_path / "leases"), "ranges": [[{"subnet": "10.180.9.0/24"}]]}}))
    res = subprocess.run([str(bin_dir / "cni-bridge"), "status", str(conf)], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "CNI_PATH"})
    assert res.returncode == 0 and res.stdout == "n: ready\n", res
    # a file of someone else's on the PATH is left alone
    (bin_dir / "cni-bridge").unlink()
    (bin_dir / "cni-bridge").write_text("not ours")
    proc = install(built, plugins, "--side-by-side", "--bin-dir", bin_dir)
    assert (bin_dir / "cni-bridge").read_text() == "not ours" and "left as it is" in proc.stderr


def test_usage_errors(tmp_path, built):
    proc = install(built, tmp_path / "a", tmp_path / "b", check=False)
    assert proc.returncode == 2 and "install [DIR]" in proc.stderr
    proc = install(built, "--sidebyside", check=False)
    assert proc.returncode == 2 and "unknown option" in proc.stderr
