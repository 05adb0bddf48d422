"""Fixtures shared by every tier. The helpers behind them live in tests/plugin_runner.py."""

import json
from pathlib import Path

import pytest

from plugin_runner import (
    REFERENCE_HOST_LOCAL, PluginRun, built_bin_dir, cni_env, exec_plugin, host_local_conf, lease_files, plugin_bin_dir,
)


def pytest_report_header(config):
    built = built_bin_dir()
    where = f"executables in {built}" if built else "source-tree wrappers (no build/bin, or CNI_BRIDGE_BIN=source)"
    reference = REFERENCE_HOST_LOCAL if REFERENCE_HOST_LOCAL.exists() else "absent"
    return [f"cni-bridge plugins: {where}", f"reference host-local: {reference}"]


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    """A directory holding our plugin executables."""
    return plugin_bin_dir(tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def run_plugin(plugin_dir):
    """run_plugin(name, command, conf, container_id=..., ifname=..., netns=..., args=...) -> PluginRun."""

    def run(name, command, conf=b"", **env_kw) -> PluginRun:
        return exec_plugin(plugin_dir / name, command, conf, **env_kw)

    return run


@pytest.fixture
def reference_host_local() -> Path:
    if not REFERENCE_HOST_LOCAL.exists():
        pytest.skip(f"reference plugin {REFERENCE_HOST_LOCAL} is absent (Debian package containernetworking-plugins)")
    return REFERENCE_HOST_LOCAL


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A lease directory root that does not exist yet, so that "nothing written" is checkable."""
    return tmp_path / "data"


@pytest.fixture
def make_conf(data_dir):
    """make_conf(ranges=[["10.0.0.0/24"]], cni_version=..., name=..., ipam={...}, **top) -> dict."""

    def make(ranges=(("10.0.0.0/24",),), **kw):
        return host_local_conf(data_dir, ranges, **kw)

    return make


@pytest.fixture
def host_local_in_process():
    """host_local_in_process(command, conf, **env) -> PluginRun, through skel.dispatch."""
    from cni_bridge.cni import skel
    from ipam.host_local import PLUGIN

    def run(command, conf, **env_kw) -> PluginRun:
        stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        code, out = skel.dispatch(PLUGIN, cni_env(command, **env_kw), stdin)
        return PluginRun(code, json.loads(out) if out else None, "", out)

    return run


@pytest.fixture
def leases():
    """leases(network dir) -> {address: lease content}."""
    return lease_files
