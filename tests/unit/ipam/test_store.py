"""The lease store: the reference host-local's on-disk format, and its lock."""

import fcntl
import os

import pytest

from cni_bridge.cni import errors
from cni_bridge.cni.errors import CNIError
from ipam.store import Store


@pytest.fixture
def net_dir(data_dir):
    return data_dir / "net1"


def test_reserve_writes_the_reference_format(data_dir, net_dir):
    with Store(str(data_dir), "net1", create=True) as store:
        assert store.reserve(" ctr1\n", "eth0", "10.0.0.2", 0)
        assert store.reserve("ctr2", "eth1", "fd00::2", 1)
    assert (net_dir / "10.0.0.2").read_bytes() == b"ctr1\r\neth0"
    assert (net_dir / "fd00::2").read_bytes() == b"ctr2\r\neth1"
    assert (net_dir / "last_reserved_ip.0").read_text() == "10.0.0.2"
    assert (net_dir / "last_reserved_ip.1").read_text() == "fd00::2"
    assert (net_dir / "lock").exists()
    assert sorted(os.listdir(net_dir)) == ["10.0.0.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]


def test_reserve_refuses_a_leased_address(data_dir, net_dir):
    with Store(str(data_dir), "net1", create=True) as store:
        assert store.reserve("ctr1", "eth0", "10.0.0.2", 0)
        assert not store.reserve("ctr2", "eth0", "10.0.0.2", 0)
    assert (net_dir / "10.0.0.2").read_bytes() == b"ctr1\r\neth0"


def test_leases_read_both_formats(data_dir, net_dir):
    net_dir.mkdir(parents=True)
    (net_dir / "10.0.0.2").write_bytes(b"ctr1\r\neth0")
    (net_dir / "10.0.0.3").write_bytes(b"ctr1\r\neth1\n")
    (net_dir / "10.0.0.4").write_bytes(b"ctr2")  # host-local before 0.9 stored the id alone
    (net_dir / "10.0.0.5").write_bytes(b"ctr3\r\neth0")
    (net_dir / "last_reserved_ip.0").write_text("10.0.0.5")
    (net_dir / "subdir").mkdir()
    with Store(str(data_dir), "net1", create=False) as store:
        assert sorted(store.leases()) == [
            ("10.0.0.2", "ctr1", "eth0"), ("10.0.0.3", "ctr1", "eth1"), ("10.0.0.4", "ctr2", None), ("10.0.0.5", "ctr3", "eth0"),
        ]
        assert store.leases_of("ctr1", "eth0") == ["10.0.0.2"]
        assert store.leases_of("ctr2", "eth7") == ["10.0.0.4"]
        assert store.leases_of("ctr9", "eth0") == []
        assert store.last_reserved(0) == "10.0.0.5" and store.last_reserved(1) is None
        store.release("10.0.0.2")
        store.release("10.0.0.2")  # idempotent
        assert store.leases_of("ctr1", "eth0") == []


def test_a_reader_creates_nothing(data_dir):
    with Store(str(data_dir), "net1", create=False) as store:
        assert store.leases() == [] and store.last_reserved(0) is None
        store.release("10.0.0.2")
    assert not data_dir.exists()


@pytest.mark.parametrize("create", [True, False])
def test_data_dir_under_a_regular_file(tmp_path, create):
    blocker = tmp_path / "file"
    blocker.write_text("")
    if create:
        with pytest.raises(CNIError) as caught:
            Store(str(blocker / "data"), "net1", create=True).__enter__()
        assert caught.value.code == errors.IO_FAILURE
        assert str(blocker / "data" / "net1") in caught.value.msg and caught.value.details == "Not a directory"
    else:
        with Store(str(blocker / "data"), "net1", create=False) as store:
            assert store.leases() == []
    assert blocker.read_text() == ""


def test_the_lock_excludes_others_until_exit(data_dir, net_dir):
    def try_lock() -> bool:
        fd = os.open(net_dir / "lock", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with Store(str(data_dir), "net1", create=True):
        assert not try_lock()
    assert try_lock()
