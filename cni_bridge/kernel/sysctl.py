"""/proc/sys: read and write kernel settings, in the calling thread's netns or another's.

/proc/sys/net shows the netns of the thread that opens it, so a setting of another netns is
read or written with the thread inside it (kernel/netns.entered). Imports: os and
kernel/netns only.
"""

import os

from cni_bridge.kernel.netns import entered


def write(key: str, value: str, netns_fd: int | None = None) -> None:
    """Write /proc/sys/<key> (key like "net/ipv6/conf/eth0/accept_dad"), in netns_fd if given.
    Raises OSError."""
    if netns_fd is None:
        _write("/proc/sys/" + key, value)
    else:
        with entered(netns_fd):
            _write("/proc/sys/" + key, value)


def read(key: str, netns_fd: int | None = None) -> str:
    """Read /proc/sys/<key> without its trailing newline, in netns_fd if given. Raises OSError."""
    if netns_fd is None:
        return _read("/proc/sys/" + key)
    with entered(netns_fd):
        return _read("/proc/sys/" + key)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)
