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


# ---- a hostile dataDir: links, FIFOs, hard links, modes, owners -----------------------


@pytest.fixture
def outside(tmp_path):
    """A file outside the dataDir that links may point at; it must never change."""
    target = tmp_path / "outside"
    target.write_text("precious\n")
    return target


def _refused(data_dir, create=True) -> CNIError:
    with pytest.raises(CNIError) as caught:
        with Store(str(data_dir), "net1", create=create) as store:
            store.reserve("ctr1", "eth0", "10.0.0.2", 0)
    assert caught.value.code == errors.IO_FAILURE, caught.value
    return caught.value


@pytest.mark.parametrize("create", [True, False])
def test_a_network_directory_that_is_a_link_is_refused(data_dir, net_dir, tmp_path, create):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data_dir.mkdir()
    net_dir.symlink_to(elsewhere)
    error = _refused(data_dir, create)
    assert (error.msg, error.details) == (f"refusing the lease directory {net_dir}", "it is a symbolic link")
    assert os.listdir(elsewhere) == []


def test_a_network_directory_that_is_a_file_is_refused(data_dir, net_dir):
    data_dir.mkdir()
    net_dir.write_text("x")
    error = _refused(data_dir)
    assert (error.msg, error.details) == (f"refusing the lease directory {net_dir}", "it is not a directory")
    assert net_dir.read_text() == "x"


def test_a_link_planted_as_round_robin_hint_is_never_followed(data_dir, net_dir, outside):
    net_dir.mkdir(parents=True)
    (net_dir / "last_reserved_ip.0").symlink_to(outside)
    error = _refused(data_dir)
    assert error.msg == f"cannot write {net_dir / 'last_reserved_ip.0'}"
    assert error.details == "it is a symbolic link, which is never followed"
    assert outside.read_text() == "precious\n"
    assert sorted(os.listdir(net_dir)) == ["last_reserved_ip.0", "lock"], "no lease is left behind"


@pytest.mark.parametrize("existing", [True, False])
def test_a_link_planted_as_lock_is_never_followed(data_dir, net_dir, outside, existing):
    net_dir.mkdir(parents=True)
    target = outside if existing else outside.with_name("created-through-a-link")
    (net_dir / "lock").symlink_to(target)
    error = _refused(data_dir)
    assert (error.msg, error.details) == (f"cannot lock the lease directory {net_dir}",
                                          "lock: it is a symbolic link, which is never followed")
    assert outside.read_text() == "precious\n" and target.exists() == existing
    assert os.listdir(net_dir) == ["lock"]


def test_a_hard_link_as_round_robin_hint_is_not_overwritten(data_dir, net_dir, outside):
    net_dir.mkdir(parents=True)
    os.link(outside, net_dir / "last_reserved_ip.0")
    error = _refused(data_dir)
    assert error.msg == f"cannot write {net_dir / 'last_reserved_ip.0'}" and "hard links" in error.details
    assert outside.read_text() == "precious\n"
    assert not (net_dir / "10.0.0.2").exists()


def test_links_and_odd_files_are_not_read_as_leases(data_dir, net_dir, outside):
    net_dir.mkdir(parents=True)
    outside.write_bytes(b"ctr1\r\neth0")
    (net_dir / "10.0.0.2").symlink_to(outside)
    os.mkfifo(net_dir / "10.0.0.3")  # opening it for reading would block without O_NONBLOCK
    os.mkfifo(net_dir / "last_reserved_ip.0")
    (net_dir / "10.0.0.4").write_bytes(b"x" * 5000)
    (net_dir / "10.0.0.5").write_bytes(b"ctr1\r\neth0")
    with Store(str(data_dir), "net1", create=False) as store:
        assert store.leases() == [("10.0.0.5", "ctr1", "eth0")]
        assert store.last_reserved(0) is None
        store.release("10.0.0.2")  # unlinks the link, not what it points to
    assert outside.read_bytes() == b"ctr1\r\neth0"


def test_a_fifo_as_lock_is_refused_without_hanging(data_dir, net_dir):
    net_dir.mkdir(parents=True)
    os.mkfifo(net_dir / "lock")
    error = _refused(data_dir)
    assert error.details == "lock: it is not a plain file"


@pytest.mark.parametrize("mode, who", [(0o775, "group"), (0o757, "others"), (0o777, "group and others"),
                                       (0o1777, "group and others")])
@pytest.mark.parametrize("which", ["dataDir", "network directory"])
def test_a_directory_others_can_write_to_is_refused(data_dir, net_dir, mode, who, which):
    net_dir.mkdir(parents=True)
    unsafe = data_dir if which == "dataDir" else net_dir
    unsafe.chmod(mode)
    for create in (True, False):
        error = _refused(data_dir, create)
        assert error.msg == f"refusing the lease directory {unsafe}"
        assert error.details == f"it is writable by {who} (mode {mode:04o}); only its owner may write to it"
    assert os.listdir(net_dir) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_directory_owned_by_someone_else_is_refused(data_dir, net_dir):
    net_dir.mkdir(parents=True)
    os.chown(net_dir, 4242, 4242)
    error = _refused(data_dir)
    assert (error.msg, error.details) == (f"refusing the lease directory {net_dir}", "it is owned by uid 4242, not by root")


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_directories_it_creates_are_0755_and_ours_whatever_the_umask(data_dir, net_dir, umask):
    deep = data_dir / "a" / "b"
    old = os.umask(umask)
    try:
        with Store(str(deep), "net1", create=True) as store:
            assert store.reserve("ctr1", "eth0", "10.0.0.2", 0)
    finally:
        os.umask(old)
    for directory in (data_dir, data_dir / "a", deep, deep / "net1"):
        info = directory.stat()
        assert (info.st_mode & 0o7777, info.st_uid) == (0o755, os.geteuid()), directory


def test_a_setgid_data_dir_hands_neither_its_group_nor_the_bit_on(data_dir, net_dir):
    data_dir.mkdir()
    data_dir.chmod(0o2755)
    with Store(str(data_dir), "net1", create=True):
        pass
    info = net_dir.stat()
    assert (info.st_mode & 0o7777, info.st_gid) == (0o755, os.getegid())


def test_an_existing_network_directory_keeps_its_mode(data_dir, net_dir):
    net_dir.mkdir(parents=True)
    net_dir.chmod(0o700)
    with Store(str(data_dir), "net1", create=True) as store:
        assert store.reserve("ctr1", "eth0", "10.0.0.2", 0)
    assert net_dir.stat().st_mode & 0o7777 == 0o700


def test_a_lease_that_cannot_be_encoded_is_never_created(data_dir, net_dir):
    with Store(str(data_dir), "net1", create=True) as store:
        with pytest.raises(UnicodeEncodeError):
            store.reserve("ctr1", "eth\udcff", "10.0.0.2", 0)
    assert sorted(os.listdir(net_dir)) == ["lock"]


def test_a_failed_hint_write_takes_the_lease_back(data_dir, net_dir):
    net_dir.mkdir(parents=True)
    (net_dir / "last_reserved_ip.0").mkdir()  # cannot be opened for writing
    with Store(str(data_dir), "net1", create=True) as store:
        with pytest.raises(CNIError) as caught:
            store.reserve("ctr1", "eth0", "10.0.0.2", 0)
        assert caught.value.code == errors.IO_FAILURE
        assert store.leases() == []


def test_an_empty_lease_left_by_a_killed_writer_is_taken_away(data_dir, net_dir):
    """A writer killed between creating a lease and filling it leaves an empty file, which
    no DEL could find: whoever reads the leases next under the lock removes it."""
    net_dir.mkdir(parents=True)
    (net_dir / "10.0.0.2").write_bytes(b"")
    (net_dir / "10.0.0.3").write_bytes(b"ctr1\r\neth0")
    with Store(str(data_dir), "net1", create=False) as store:
        assert store.leases() == [("10.0.0.3", "ctr1", "eth0")]
    assert sorted(os.listdir(net_dir)) == ["10.0.0.3", "lock"]
    with Store(str(data_dir), "net1", create=True) as store:
        assert store.reserve("ctr2", "eth0", "10.0.0.2", 0), "the address is free again"
