"""host-local's lease store, in the reference plugin's on-disk format.

<dataDir>/<network>/
    <ip>                     one file per leased address, holding "<container id>\\r\\n<ifname>"
    last_reserved_ip.<N>     the address last handed out from range set N (round robin)
    lock                     flock()ed while a process reads or changes the directory

A node can switch between the reference host-local and ours in either direction: both
read and write these files the same way and exclude each other through the same lock.

What the store finds on disk is not trusted. The dataDir (its path as configured: links
on the way to it are the admin's) and the network directory must be directories that
only root (or whoever we run as) owns and can write to; the network directory must not be
a symbolic link. Every file in it is opened relative to the directory we checked, with
O_NOFOLLOW, so that a link planted there is never followed and the directory cannot be
swapped under us; O_NONBLOCK keeps a planted FIFO from hanging us, and a file that is not
a plain file (or that has other names, for the one we overwrite) is refused. Directories
we create are 0755 and ours, whatever the umask.
"""

import fcntl
import os
import stat

from cni_bridge.cni.errors import CNIError, IO_FAILURE

LINE_BREAK = "\r\n"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"
DIR_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A lease holds a container id and an ifname; anything longer is not a lease of ours.
MAX_LEASE_BYTES = 4096
ENOTDIR, ELOOP = 20, 40


class Store:
    """The leases of one network. Use as a context manager: entering checks the
    directories and takes the lock. A reader (create=False) of a network that never had a
    lease sees an empty store and creates nothing."""

    def __init__(self, data_dir: str, network: str, create: bool):
        self.data_dir = data_dir
        self.network = network  # a valid network name: no '/', never '.' or '..'
        self.dir = os.path.join(data_dir, network)
        self.create = create
        self._dir_fd = -1
        self._lock_fd = -1

    def __enter__(self) -> "Store":
        data_fd = self._open_data_dir()
        if data_fd < 0:
            return self
        try:
            self._dir_fd = self._open_network_dir(data_fd)
        finally:
            os.close(data_fd)
        if self._dir_fd < 0:
            return self
        try:
            self._lock_fd = self._open(LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as err:
            self.__exit__()
            raise CNIError(IO_FAILURE, f"cannot lock the lease directory {self.dir}",
                           f"{LOCK_NAME}: {_why(err)}") from None
        return self

    def __exit__(self, *exc) -> None:
        for fd in (self._lock_fd, self._dir_fd):  # closing the lock's fd releases the flock
            if fd >= 0:
                os.close(fd)
        self._lock_fd = self._dir_fd = -1

    # -- the two directories

    def _open_data_dir(self) -> int:
        """An fd of the checked dataDir, created when missing (for a writer); -1 for a reader
        when there is none."""
        try:
            fd = os.open(self.data_dir, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError) as err:
            if not self.create:
                return -1
            if isinstance(err, NotADirectoryError):
                raise CNIError(IO_FAILURE, f"cannot create the lease directory {self.dir}", err.strerror) from None
            _make_directories(self.data_dir, self.dir)
            fd = _open_directory(self.data_dir, self.dir)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot open the lease directory {self.data_dir}", err.strerror) from None
        try:
            _check_safe(fd, self.data_dir)
        except CNIError:
            os.close(fd)
            raise
        return fd

    def _open_network_dir(self, data_fd: int) -> int:
        """An fd of the checked network directory, created when missing (for a writer);
        -1 for a reader when there is none."""
        created = False
        if self.create:
            try:
                os.mkdir(self.network, DIR_MODE, dir_fd=data_fd)
                created = True
            except FileExistsError:
                pass
            except OSError as err:
                raise CNIError(IO_FAILURE, f"cannot create the lease directory {self.dir}", err.strerror) from None
        try:
            fd = os.open(self.network, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=data_fd)
        except FileNotFoundError:
            return -1  # a reader, and nothing was ever leased here
        except OSError as err:
            if err.errno != ENOTDIR:
                raise CNIError(IO_FAILURE, f"cannot open the lease directory {self.dir}", err.strerror) from None
            raise CNIError(IO_FAILURE, f"refusing the lease directory {self.dir}",
                           _what_it_is(self.network, data_fd)) from None
        try:
            if created:
                _make_ours(fd, self.dir)
            _check_safe(fd, self.dir)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- the files in the network directory

    def _open(self, name: str, flags: int, mode: int = 0o644) -> int:
        """Open a plain file of the network directory, never through a link."""
        fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=self._dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(0, "it is not a plain file")
        return fd

    def reserve(self, container_id: str, ifname: str, ip: str, range_set_index: int) -> bool:
        """Lease `ip`; False if it is leased already."""
        content = f"{container_id.strip()}{LINE_BREAK}{ifname}".encode()  # before the file exists
        path = os.path.join(self.dir, ip)
        try:
            fd = os.open(ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o644, dir_fd=self._dir_fd)
        except FileExistsError:
            return False
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot write lease {path}", _why(err)) from None
        try:
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            self._write(LAST_RESERVED_PREFIX + str(range_set_index), ip)
        except BaseException as err:
            self.release(ip)
            if isinstance(err, OSError):
                raise CNIError(IO_FAILURE, f"cannot write lease {path}", _why(err)) from None
            raise
        return True

    def last_reserved(self, range_set_index: int) -> str | None:
        """The round-robin hint of a range set, or None when it is missing or unreadable."""
        if self._dir_fd < 0:
            return None
        try:
            fd = self._open(LAST_RESERVED_PREFIX + str(range_set_index), os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, 256).decode(errors="replace").strip()
        except OSError:
            return None
        finally:
            os.close(fd)

    def leases(self) -> list[tuple[str, str, str | None]]:
        """Every lease as (ip, container id, ifname); ifname is None in leases written by
        host-local versions that stored the container id alone."""
        if self._dir_fd < 0:
            return []  # nothing was ever leased here (a reader does not create the directory)
        try:
            entries = os.listdir(self._dir_fd)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot read the lease directory {self.dir}", err.strerror) from None
        found = []
        for name in entries:
            if name == LOCK_NAME or name.startswith(LAST_RESERVED_PREFIX):
                continue
            try:
                fd = self._open(name, os.O_RDONLY)
            except OSError:
                continue  # a directory, a link, a FIFO, gone meanwhile: not a lease
            try:
                content = os.read(fd, MAX_LEASE_BYTES + 1)
            except OSError:
                continue
            finally:
                os.close(fd)
            if not content:
                # Writers (ours and the reference) create and fill a lease under the lock we
                # hold: an empty one is what a writer killed in between left. Nobody could
                # release it, and its address would never be handed out again.
                self.release(name)
                continue
            if len(content) > MAX_LEASE_BYTES:
                continue
            container_id, _, ifname = content.decode(errors="replace").strip().partition(LINE_BREAK)
            found.append((name, container_id.strip(), ifname.strip() if ifname else None))
        return found

    def leases_of(self, container_id: str, ifname: str) -> list[str]:
        """The addresses leased to (container id, ifname), old id-only leases included."""
        container_id = container_id.strip()
        return [ip for ip, cid, name in self.leases() if cid == container_id and name in (ifname, None)]

    def release(self, ip: str) -> None:
        if self._dir_fd < 0:
            return
        try:
            os.unlink(ip, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass

    def _write(self, name: str, content: str) -> None:
        """Overwrite a small file in place, as the reference does (its readers hold the lock)."""
        path = os.path.join(self.dir, name)
        try:
            fd = self._open(name, os.O_WRONLY | os.O_CREAT)
            try:
                if os.fstat(fd).st_nlink != 1:
                    raise OSError(0, "it has other names (hard links)")
                os.ftruncate(fd, 0)
                os.write(fd, content.encode())
            finally:
                os.close(fd)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot write {path}", _why(err)) from None


def _why(err: OSError) -> str:
    """An OSError in words; a link where a file belongs is named as such."""
    if err.errno == ELOOP:
        return "it is a symbolic link, which is never followed"
    return err.strerror or str(err)


def _what_it_is(name: str, dir_fd: int) -> str:
    """Why a directory could not be opened as one (O_DIRECTORY | O_NOFOLLOW said ENOTDIR)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return "it is a symbolic link"
    if stat.S_ISDIR(mode):
        return "it was replaced while being opened"
    return "it is not a directory"


def _open_directory(path: str, shown: str) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as err:
        raise CNIError(IO_FAILURE, f"cannot create the lease directory {shown}", err.strerror) from None


def _make_directories(path: str, shown: str) -> None:
    """mkdir -p, with every directory it creates 0755 and ours whatever the umask."""
    parent = os.path.dirname(path.rstrip("/"))
    if parent and parent != path and not os.path.isdir(parent):
        _make_directories(parent, shown)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return  # made meanwhile by a concurrent ADD (or the reference)
    except OSError as err:
        raise CNIError(IO_FAILURE, f"cannot create the lease directory {shown}", err.strerror) from None
    fd = _open_directory(path, shown)
    try:
        _make_ours(fd, shown)
    finally:
        os.close(fd)


def _make_ours(fd: int, shown: str) -> None:
    """A directory we just made: owned by us (root) and 0755. mkdir gives at most 0755 less
    the umask, so until this runs it is never writable by anyone else."""
    try:
        info = os.fstat(fd)
        if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, os.geteuid(), os.getegid())
        if info.st_mode & 0o7777 != DIR_MODE:
            os.fchmod(fd, DIR_MODE)
    except OSError as err:
        raise CNIError(IO_FAILURE, f"cannot create the lease directory {shown}", err.strerror) from None


def _check_safe(fd: int, path: str) -> None:
    """Refuse a directory someone besides root (and us) can write to: they could plant
    links or leases in it."""
    info = os.fstat(fd)
    writable = [who for who, bit in (("group", 0o020), ("others", 0o002)) if info.st_mode & bit]
    if writable:
        raise CNIError(IO_FAILURE, f"refusing the lease directory {path}",
                       f"it is writable by {' and '.join(writable)} (mode {info.st_mode & 0o7777:04o}); "
                       f"only its owner may write to it")
    if info.st_uid not in (0, os.geteuid()):
        raise CNIError(IO_FAILURE, f"refusing the lease directory {path}",
                       f"it is owned by uid {info.st_uid}, not by root")
