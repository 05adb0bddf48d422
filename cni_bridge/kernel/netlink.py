"""Netlink for our plugins: the socket, and a table-driven codec.

A netlink message is a 16-byte header, a fixed family header (a C struct) and attributes
(length, type, value, each padded to 4 bytes). Which attributes an attribute space holds,
and how each value is written, is data: an `Attrs` table per space and a `MessageType`
per fixed header. kernel/rtnl.py and kernel/nfnl.py hold those tables for rtnetlink and
nfnetlink; this module knows no message of its own.

Attribute kinds: u8 u16 u32 s32 u64 (host order), be16 be32 be64 (network order), str
(NUL-terminated), bytes, mac ("aa:bb:.." text), ip (4 or 16 bytes as text), flag (no
value), and the structured ones: another Attrs table (a nested attribute), a MessageType
(a nested header plus attributes, as a veth peer is given), a Struct (a C struct as a
dict). An entry may say "list" (the attribute repeats; decoded as a list) and "nested"
(encode with NLA_F_NESTED, which newer kernel policies insist on).

Imports: struct, os and _socket only; every exec of every plugin loads this module.
"""

import os
import struct
from _socket import AF_INET, AF_INET6, AF_NETLINK, MSG_DONTWAIT, MSG_TRUNC, SOCK_CLOEXEC, SOCK_RAW, inet_ntop, inet_pton
from _socket import socket as _socket

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_NONREC = 0x100  # on a delete: do not remove what the object holds
NLM_F_CAPPED = 0x100  # on an ack: the request's body is left out
NLM_F_ACK_TLVS = 0x200  # on an ack: extended ack attributes follow
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
NLMSGERR_ATTR_MSG = 1

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, seq, pid
_ATTR = struct.Struct("=HH")  # struct nlattr: length, type
_ERRNO = struct.Struct("=i")
RECV_SIZE = 65536  # a dump batch is at most 32 KiB; a larger single reply is refused
# Requests per datagram: the kernel queues every answer while it handles the datagram, and
# the socket's receive buffer must hold them all.
PER_DATAGRAM = 64
EINTR, ENODEV, EPROTO, EMSGSIZE, ENOBUFS = 4, 19, 71, 90, 105


class NetlinkError(OSError):
    """A request the kernel refused: .errno, .strerror, .op (what we asked), .extack."""

    def __init__(self, errno: int, op: str, extack: str = ""):
        super().__init__(errno, os.strerror(errno))
        self.op = op
        self.extack = extack

    def __str__(self) -> str:
        text = f"{self.op}: {self.strerror}"
        return f"{text} ({self.extack})" if self.extack else text


def _pad(length: int) -> int:
    return (length + 3) & ~3


# ---- scalar kinds -----------------------------------------------------------------------


def _packer(fmt: str):
    s = struct.Struct(fmt)
    return s.pack, lambda data: s.unpack_from(data)[0]


def _mac_encode(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _ip_encode(text: str) -> bytes:
    return inet_pton(AF_INET6 if ":" in text else AF_INET, text)


def _ip_decode(data: bytes) -> str:
    return inet_ntop(AF_INET6 if len(data) == 16 else AF_INET, data)


KINDS = {
    "u8": _packer("=B"),
    "u16": _packer("=H"),
    "u32": _packer("=I"),
    "s32": _packer("=i"),
    "u64": _packer("=Q"),
    "be16": _packer(">H"),
    "be32": _packer(">I"),
    "be64": _packer(">Q"),
    "str": (lambda text: text.encode() + b"\0", lambda data: bytes(data).split(b"\0", 1)[0].decode(errors="replace")),
    "bytes": (bytes, bytes),
    "mac": (_mac_encode, lambda data: ":".join(f"{b:02x}" for b in data)),
    "ip": (_ip_encode, _ip_decode),
    "flag": (lambda value: b"", lambda data: True),
}


class Struct:
    """A C struct carried as an attribute value, read and written as a dict of its fields."""

    def __init__(self, fmt: str, fields: tuple[str, ...]):
        self.struct = struct.Struct(fmt)
        self.fields = fields

    def encode(self, value: dict) -> bytes:
        return self.struct.pack(*(value.get(name, 0) for name in self.fields))

    def decode(self, data: bytes) -> dict:
        return dict(zip(self.fields, self.struct.unpack_from(data)))


# ---- attribute tables -------------------------------------------------------------------


class Attrs:
    """An attribute space: name -> (type id, kind[, options]).

    kind is a KINDS name, another Attrs (nested), a MessageType or a Struct. options is a
    string holding "list" and/or "nested" (see the module docstring).
    """

    def __init__(self, entries: dict):
        self.by_name = {}
        self.by_id = {}
        for name, (type_id, kind, *rest) in entries.items():
            options = rest[0] if rest else ""
            entry = (name, type_id, kind, "list" in options, "nested" in options)
            self.by_name[name] = entry
            self.by_id[type_id] = entry

    def encode(self, pairs) -> bytes:
        """Attributes from [(name, value), ...]; a nested value is a pair list itself."""
        out = []
        for name, value in pairs:
            _, type_id, kind, _, nested_flag = self.by_name[name]
            if isinstance(kind, str):
                payload = KINDS[kind][0](value)
            elif isinstance(kind, MessageType):
                payload = kind.encode_body(*value)
            else:
                payload = kind.encode(value)
            if nested_flag:
                type_id |= NLA_F_NESTED
            length = _ATTR.size + len(payload)
            out.append(_ATTR.pack(length, type_id) + payload + b"\0" * (_pad(length) - length))
        return b"".join(out)

    def decode(self, data, start: int = 0, end: int | None = None) -> dict:
        """{name: value} of the attributes in data[start:end]; unknown ones are skipped."""
        end = len(data) if end is None else end
        found: dict = {}
        pos = start
        while pos + _ATTR.size <= end:
            length, type_id = _ATTR.unpack_from(data, pos)
            if length < _ATTR.size or pos + length > end:
                break  # malformed: stop rather than read past the message
            entry = self.by_id.get(type_id & NLA_TYPE_MASK)
            if entry is not None:
                name, _, kind, repeated, _ = entry
                value = _decode_value(kind, data[pos + _ATTR.size:pos + length])
                if repeated:
                    found.setdefault(name, []).append(value)
                else:
                    found[name] = value
            pos += _pad(length)
        return found


def _decode_value(kind, payload: bytes):
    if isinstance(kind, str):
        return KINDS[kind][1](payload)
    if isinstance(kind, MessageType):
        return kind.decode_body(payload)
    return kind.decode(payload)


class MessageType:
    """A family header (C struct with named fields) followed by attributes of one space."""

    def __init__(self, fmt: str, fields: tuple[str, ...], attrs: Attrs):
        self.header = struct.Struct(fmt)
        self.fields = fields
        self.attrs = attrs

    def encode_body(self, header: dict, pairs=()) -> bytes:
        values = (header.get(name, 0) for name in self.fields)
        return self.header.pack(*values) + self.attrs.encode(pairs)

    def decode_body(self, payload: bytes, start: int = 0, end: int | None = None) -> tuple[dict, dict]:
        header = dict(zip(self.fields, self.header.unpack_from(payload, start)))
        return header, self.attrs.decode(payload, start + self.header.size, end)

    def message(self, msg_type: int, flags: int, header: dict, pairs=()) -> bytes:
        """A whole netlink message; the socket fills in the sequence number."""
        body = self.encode_body(header, pairs)
        return HEADER.pack(HEADER.size + len(body), msg_type, flags, 0, 0) + body

    def decode(self, message: bytes) -> tuple[dict, dict]:
        """(family header, attributes) of a whole netlink message."""
        length = HEADER.unpack_from(message)[0]
        return self.decode_body(message, HEADER.size, length)


# ---- the socket -------------------------------------------------------------------------


class NetlinkSocket:
    """One netlink socket. Requests go out PER_DATAGRAM to a datagram; every reply is
    matched to its request by sequence number.

    It is closed only by the process's exit: closing an nfnetlink socket after a change
    that freed kernel objects waits for an RCU grace period, and at exit that wait has
    overlapped the rest of the work.
    """

    def __init__(self, sock):
        self._sock = sock  # a bound AF_NETLINK socket (or a stand-in for one, in tests)
        self._seq = 0

    @classmethod
    def open(cls, protocol: int, strict: bool = False) -> "NetlinkSocket":
        """A socket of `protocol` in the calling thread's netns."""
        sock = _socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol)
        # Errors come back with only the failing request's header (CAP_ACK) plus the
        # kernel's explanation (EXT_ACK); strict checking makes rtnetlink honour dump
        # filters (ifindex for addresses, oif/table for routes).
        options = [NETLINK_CAP_ACK, NETLINK_EXT_ACK] + ([NETLINK_GET_STRICT_CHK] if strict else [])
        for option in options:
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:  # an older kernel: errors lose their text, filters run in userspace
                pass
        sock.bind((0, 0))
        return cls(sock)

    def close(self) -> None:
        self._sock.close()

    def request(self, message: bytes, op: str) -> list[bytes]:
        """One request; its replies (whole messages). Raises NetlinkError."""
        (outcome,) = self.exchange([(message, op)])
        if isinstance(outcome, NetlinkError):
            raise outcome
        return outcome

    def exchange(self, requests: list[tuple[bytes, str]]) -> list:
        """Send requests (message, op), PER_DATAGRAM to a datagram; for each, its replies or
        its NetlinkError.

        A request whose flags hold NLM_F_DUMP is a dump: its answer ends with NLMSG_DONE.
        Every other request is sent with NLM_F_ACK, so its answer ends with an ack. The
        kernel runs one dump at a time per socket, so a call holds at most one dump; one
        that a concurrent change made inconsistent (NLM_F_DUMP_INTR) is asked again.
        """
        if sum(1 for message, _ in requests if _is_dump(message)) > 1:
            raise ValueError("a netlink exchange holds at most one dump")
        outcomes = []
        for start in range(0, len(requests), PER_DATAGRAM):
            outcomes += self._exchange_once(requests[start:start + PER_DATAGRAM])
        for index, outcome in enumerate(outcomes):
            tries = 1
            while isinstance(outcome, _Interrupted):
                if tries == 4:
                    outcome = NetlinkError(EINTR, requests[index][1], "dump kept being interrupted")
                    break
                outcome = self._exchange_once([requests[index]])[0]
                tries += 1
            outcomes[index] = outcome
        return outcomes

    def _exchange_once(self, requests) -> list:
        first = self._seq + 1
        datagram = []
        for message, _ in requests:
            self._seq += 1
            flags = HEADER.unpack_from(message)[2] | NLM_F_REQUEST
            if not _is_dump(message):
                flags |= NLM_F_ACK
            datagram.append(_with_header(message, flags, self._seq))
        op = requests[0][1]
        self._send(b"".join(datagram), op)

        outcomes: list = [None] * len(requests)
        replies: list[list[bytes]] = [[] for _ in requests]
        interrupted = [False] * len(requests)
        pending = set(range(first, first + len(requests)))
        while pending:
            try:
                buf, _, msg_flags, _ = self._sock.recvmsg(RECV_SIZE)
            except OSError as err:  # ENOBUFS: answers were lost, so the exchange failed
                raise NetlinkError(err.errno or EPROTO, requests[min(pending) - first][1], "reading the answer") from None
            if msg_flags & MSG_TRUNC:
                raise NetlinkError(EMSGSIZE, requests[min(pending) - first][1], "reply larger than 64 KiB")
            for rtype, rflags, rseq, errno, extack, message in _messages(buf):
                if rseq not in pending:
                    continue  # a late answer to an abandoned request
                index = rseq - first
                if rtype == NLMSG_ERROR or rtype == NLMSG_DONE:
                    if errno:
                        outcomes[index] = NetlinkError(errno, requests[index][1], extack)
                    else:
                        outcomes[index] = _Interrupted() if interrupted[index] else replies[index]
                    pending.discard(rseq)
                else:
                    interrupted[index] |= bool(rflags & NLM_F_DUMP_INTR)
                    replies[index].append(message)
        return outcomes

    def send_batch(self, messages: list[bytes], op: str) -> None:
        """Send an nfnetlink batch (BEGIN, changes, END) as one datagram; raise the first
        error the kernel reports (it then has applied nothing of the batch).

        The changes go without NLM_F_ACK: the kernel answers only what fails (and a BEGIN
        or END it refuses). nfnetlink handles the whole batch inside the send, so every
        answer is queued by the time send() returns: read until the queue is empty. More
        failures than the receive buffer holds are lost (ENOBUFS, itself a failure); an
        answer left from an earlier exchange is told apart by its sequence number.
        """
        first = self._seq + 1
        datagram = []
        for message in messages:
            self._seq += 1
            flags = (HEADER.unpack_from(message)[2] | NLM_F_REQUEST) & ~NLM_F_ACK
            datagram.append(_with_header(message, flags, self._seq))
        self._send(b"".join(datagram), op)
        failure = None
        while True:
            try:
                buf = self._sock.recv(RECV_SIZE, MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as err:
                failure = failure or NetlinkError(err.errno or EPROTO, op, "reading the answer")
                if err.errno == ENOBUFS:  # answers were lost: read on what was kept
                    continue
                break
            for rtype, _, rseq, errno, extack, _ in _messages(buf):
                if rtype == NLMSG_ERROR and errno and failure is None and first <= rseq <= self._seq:
                    failure = NetlinkError(errno, op, extack)
        if failure is not None:
            raise failure

    def _send(self, datagram: bytes, op: str) -> None:
        try:
            self._sock.send(datagram)
        except OSError as err:  # EMSGSIZE, EPERM, ...: the kernel took none of it
            raise NetlinkError(err.errno or EPROTO, op, "sending the request") from None


def _messages(buf: bytes):
    """(type, flags, seq, errno, extack, message) of each message in one datagram; errno and
    extack are set for an error ack, and for a dump that failed midway (its DONE says so)."""
    pos = 0
    while pos + HEADER.size <= len(buf):
        length, rtype, rflags, rseq, _ = HEADER.unpack_from(buf, pos)
        if length < HEADER.size or pos + length > len(buf):
            raise NetlinkError(EPROTO, "netlink", "malformed reply")
        errno, extack = 0, ""
        if rtype == NLMSG_ERROR or (rtype == NLMSG_DONE and length >= HEADER.size + 4):
            errno = -_ERRNO.unpack_from(buf, pos + HEADER.size)[0]
            if errno:
                extack = _extack(buf, pos, length, rflags, rtype)
        yield rtype, rflags, rseq, errno, extack, bytes(buf[pos:pos + length])
        pos += _pad(length)


class _Interrupted:
    """A dump that the kernel flagged as inconsistent; it is asked again."""


def _is_dump(message: bytes) -> bool:
    return HEADER.unpack_from(message)[2] & NLM_F_DUMP == NLM_F_DUMP


def _with_header(message: bytes, flags: int, seq: int) -> bytes:
    length, msg_type = HEADER.unpack_from(message)[:2]
    return HEADER.pack(length, msg_type, flags, seq, 0) + message[HEADER.size:]


def _extack(buf: bytes, offset: int, length: int, flags: int, rtype: int) -> str:
    """The kernel's NLMSGERR_ATTR_MSG text from an error message, or ""."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    pos = offset + HEADER.size + 4  # after the error code
    if rtype == NLMSG_ERROR:  # then the request's header, and its body unless CAPPED
        pos += HEADER.size if flags & NLM_F_CAPPED else HEADER.unpack_from(buf, pos)[0]
    end = offset + length
    while pos + _ATTR.size <= end:
        alen, atype = _ATTR.unpack_from(buf, pos)
        if alen < _ATTR.size:
            break
        if atype == NLMSGERR_ATTR_MSG:
            return bytes(buf[pos + _ATTR.size:pos + alen]).rstrip(b"\0").decode(errors="replace")
        pos += _pad(alen)
    return ""
