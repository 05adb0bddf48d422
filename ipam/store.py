"""host-local's lease store, in the reference plugin's on-disk format.

<dataDir>/<network>/
    <ip>                     one file per leased address, holding "<container id>\\r\\n<ifname>"
    last_reserved_ip.<N>     the address last handed out from range set N (round robin)
    lock                     flock()ed while a process reads or changes the directory

A node can switch between the reference host-local and ours in either direction: both
read and write these files the same way and exclude each other through the same lock.
"""

import fcntl
import os

from cni_bridge.cni.errors import CNIError, IO_FAILURE

LINE_BREAK = "\r\n"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"


class Store:
    """The leases of one network. Use as a context manager: entering takes the lock."""

    def __init__(self, data_dir: str, network: str, create: bool):
        self.dir = os.path.join(data_dir, network)
        self.create = create
        self._lock_fd = -1

    def __enter__(self) -> "Store":
        if self.create:
            try:
                os.makedirs(self.dir, mode=0o755, exist_ok=True)
            except OSError as err:
                raise CNIError(IO_FAILURE, f"cannot create the lease directory {self.dir}", err.strerror) from None
        elif not os.path.isdir(self.dir):
            return self  # nothing was ever leased here; readers see an empty store
        try:
            self._lock_fd = os.open(os.path.join(self.dir, LOCK_NAME), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot lock the lease directory {self.dir}", err.strerror) from None
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = -1

    def reserve(self, container_id: str, ifname: str, ip: str, range_set_index: int) -> bool:
        """Lease `ip`; False if it is leased already."""
        path = os.path.join(self.dir, ip)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot write lease {path}", err.strerror) from None
        try:
            os.write(fd, f"{container_id.strip()}{LINE_BREAK}{ifname}".encode())
        except OSError as err:
            os.close(fd)
            os.unlink(path)
            raise CNIError(IO_FAILURE, f"cannot write lease {path}", err.strerror) from None
        os.close(fd)
        self._write(LAST_RESERVED_PREFIX + str(range_set_index), ip)
        return True

    def last_reserved(self, range_set_index: int) -> str | None:
        try:
            with open(os.path.join(self.dir, LAST_RESERVED_PREFIX + str(range_set_index))) as f:
                return f.read().strip()
        except OSError:
            return None

    def leases(self) -> list[tuple[str, str, str | None]]:
        """Every lease as (ip, container id, ifname); ifname is None in leases written by
        host-local versions that stored the container id alone."""
        try:
            entries = os.listdir(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            return []  # nothing was ever leased here (a reader does not create the directory)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot read the lease directory {self.dir}", err.strerror) from None
        found = []
        for name in entries:
            if name == LOCK_NAME or name.startswith(LAST_RESERVED_PREFIX):
                continue
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8", errors="replace", newline="") as f:
                    content = f.read().strip()
            except (IsADirectoryError, OSError):
                continue
            container_id, _, ifname = content.partition(LINE_BREAK)
            found.append((name, container_id.strip(), ifname.strip() if ifname else None))
        return found

    def leases_of(self, container_id: str, ifname: str) -> list[str]:
        """The addresses leased to (container id, ifname), old id-only leases included."""
        container_id = container_id.strip()
        return [ip for ip, cid, name in self.leases() if cid == container_id and name in (ifname, None)]

    def release(self, ip: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, ip))
        except FileNotFoundError:
            pass

    def _write(self, name: str, content: str) -> None:
        path = os.path.join(self.dir, name)
        try:
            with open(path, "w") as f:
                f.write(content)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"cannot write {path}", err.strerror) from None
