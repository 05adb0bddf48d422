"""Network namespaces: open one by path, run code inside it.

The plugin never moves the whole process: `entered()` switches only the calling thread
(setns(2) acts per thread), and always switches it back. Python 3.11 has no os.setns, so
setns comes from libc through ctypes, loaded on first use. Imports: os, fcntl, ctypes
(lazily) and cni_bridge.cni.errors; nothing else, so the plugin's exec stays cheap.
"""

import os
import sys

from cni_bridge.cni.errors import INVALID_ENVIRONMENT, CNIError

CLONE_NEWNET = 0x40000000
# ioctl(2) on an nsfs file: returns the namespace's CLONE_NEW* type (Linux >= 4.11).
_NS_GET_NSTYPE = 0xB703

_setns = None


class NetnsNotFound(CNIError):
    """The netns path does not exist (DEL treats this as "already gone")."""

    def __init__(self, path: str, details: str = ""):
        super().__init__(INVALID_ENVIRONMENT, f"netns {path!r} does not exist", details)
        self.path = path


def open_netns(path: str) -> int:
    """Open a network namespace file (e.g. /var/run/netns/x, /proc/PID/ns/net); return its fd.

    Raises NetnsNotFound when the path is missing and CNIError(INVALID_ENVIRONMENT) when it
    cannot be opened or is not a network namespace. The caller closes the fd.
    """
    try:
        # O_NONBLOCK: a FIFO at the path must not hang us; it is refused as no namespace.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise NetnsNotFound(path, e.strerror) from None
    except OSError as e:
        raise CNIError(INVALID_ENVIRONMENT, f"failed to open netns {path!r}", e.strerror) from None
    try:
        if not _is_netns(fd):
            raise CNIError(INVALID_ENVIRONMENT, f"{path!r} is not a network namespace")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_netns(fd: int) -> bool:
    import fcntl

    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        pass
    # Not an nsfs file, or a kernel without NS_GET_NSTYPE. A /proc/PID/ns/net fd reads
    # back as "net:[inode]"; a bind-mounted one (/run/netns/x) reads back as its mount
    # path, which is why the ioctl comes first.
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("net:[")
    except OSError:
        return False


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace behind `fd`; OSError on failure."""
    global _setns
    if _setns is None:
        import ctypes

        _setns = ctypes.CDLL(None, use_errno=True).setns
    if _setns(fd, nstype) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class entered:
    """Context manager: run the body with the calling thread inside netns `netns_fd`.

    Netlink sockets keep the netns they were created in, so this is only needed while
    creating them and for /proc/sys writes. If switching back fails the process exits:
    continuing in the container's netns would configure the wrong network.
    """

    def __init__(self, netns_fd: int):
        self.netns_fd = netns_fd
        self._orig = -1

    def __enter__(self):
        # thread-self, not self: /proc/self/ns/net is the thread group leader's netns.
        self._orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(self.netns_fd)
        except OSError as e:
            os.close(self._orig)
            raise CNIError(INVALID_ENVIRONMENT, "failed to enter netns", e.strerror) from None
        return self

    def __exit__(self, *exc) -> None:
        try:
            setns(self._orig)
        except OSError as e:
            sys.stderr.write(f"cni-bridge: cannot return to the original netns: {e}; aborting\n")
            sys.stderr.flush()
            os._exit(1)
        finally:
            os.close(self._orig)
