"""open_netns on paths that are no namespace: refused with error 4 at once, never blocking."""

import os

import pytest

from cni_bridge.cni import errors
from cni_bridge.cni.errors import CNIError
from cni_bridge.kernel.netns import NetnsNotFound, open_netns


@pytest.mark.parametrize("kind", ["fifo", "file", "directory", "device"])
def test_a_path_that_is_no_namespace_is_refused(tmp_path, kind):
    """A FIFO once blocked open() for as long as nobody wrote to it."""
    path = {"fifo": tmp_path / "fifo", "file": tmp_path / "file", "directory": tmp_path, "device": "/dev/null"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "file":
        path.write_text("")
    with pytest.raises(CNIError) as caught:
        open_netns(str(path))
    assert caught.value.code == errors.INVALID_ENVIRONMENT
    assert caught.value.msg == f"{str(path)!r} is not a network namespace"


def test_a_missing_path_is_reported_as_gone(tmp_path):
    with pytest.raises(NetnsNotFound):
        open_netns(str(tmp_path / "gone"))


def test_its_own_namespace_opens():
    fd = open_netns("/proc/self/ns/net")
    os.close(fd)
