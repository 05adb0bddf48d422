"""Fixtures for tests that need root and a real kernel: throwaway network namespaces.

Every namespace is a named one (`ip netns add <prefix>-<role>-<random>`), so the
independent tools (`ip -n NAME`, `bridge -n NAME`) can inspect it, and it is deleted in
teardown even when the test fails. `host_netns` moves the test's thread into a fresh
namespace for the test's duration, so code that works on "the host" never touches the
real one. A test module picks its own name prefix by overriding the `netns_prefix`
fixture. The setns here is a private ctypes call, independent of the code under test.
"""

import ctypes
import json
import os
import secrets
import subprocess

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def current_netns_inode() -> int:
    """Identity of the calling thread's netns (compare before/after)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


class Netns:
    """A named network namespace: name, path, an open fd, and helpers around `ip`."""

    def __init__(self, name: str):
        self.name = name
        self.path = f"/var/run/netns/{name}"
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self.inode = os.fstat(self.fd).st_ino

    def ip(self, *args: str, check: bool = True) -> str:
        return run("ip", "-n", self.name, *args, check=check).stdout

    def ip_json(self, *args: str):
        out = run("ip", "-n", self.name, "-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def bridge_json(self, *args: str):
        out = run("bridge", "-n", self.name, "-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def link(self, name: str) -> dict | None:
        """`ip -j -d link show NAME` as a dict, or None if absent."""
        res = run("ip", "-n", self.name, "-j", "-d", "link", "show", "dev", name, check=False)
        return json.loads(res.stdout)[0] if res.returncode == 0 else None

    def sysctl(self, key: str) -> str:
        return run("ip", "netns", "exec", self.name, "sysctl", "-n", key).stdout.strip()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@pytest.fixture(scope="session", autouse=True)
def _require_root():
    if os.geteuid() != 0:
        pytest.skip("privileged tests need root")


@pytest.fixture
def netns_prefix() -> str:
    """Name prefix of the namespaces a module's tests create; override per module."""
    return "nlt"


@pytest.fixture
def make_netns(netns_prefix):
    """Factory: make_netns(role) creates <prefix>-<role>-<random>; all deleted at teardown."""
    made: list[Netns] = []

    def make(role: str = "ns") -> Netns:
        name = f"{netns_prefix}-{role}-{secrets.token_hex(4)}"
        run("ip", "netns", "add", name)
        try:
            ns = Netns(name)
        except BaseException:
            run("ip", "netns", "del", name, check=False)
            raise
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.close()
        run("ip", "netns", "del", ns.name, check=False)


@pytest.fixture
def container_netns(make_netns) -> Netns:
    """A fresh namespace standing in for a container's (the thread stays outside it)."""
    return make_netns("c")


@pytest.fixture
def host_netns(make_netns):
    """A fresh namespace standing in for the host; the test's thread runs inside it."""
    ns = make_netns("h")
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    orig_inode = os.fstat(orig).st_ino
    try:
        _setns(ns.fd)
        try:
            yield ns
        finally:
            _setns(orig)
    finally:
        os.close(orig)
    assert current_netns_inode() == orig_inode, "test thread not back in its original netns"
