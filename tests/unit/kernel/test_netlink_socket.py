"""NetlinkSocket's transport over a stand-in kernel: sequence numbers, acks, dumps, errors with
the kernel's text, batches. No root needed."""

import errno
import struct

import pytest

from cni_bridge.kernel import netlink
from cni_bridge.kernel.netlink import HEADER, NetlinkError, NetlinkSocket

ACK_TLVS, CAPPED = 0x200, 0x100


def msg(msg_type: int, flags: int = 0, body: bytes = b"", seq: int = 0) -> bytes:
    """One message, padded to 4 bytes as the kernel pads them."""
    return HEADER.pack(HEADER.size + len(body), msg_type, flags, seq, 0) + body + b"\0" * (-len(body) % 4)


def error(seq: int, code: int, request: bytes = b"", text: str = "") -> bytes:
    """An NLMSG_ERROR as a CAP_ACK + EXT_ACK socket gets it: the request's header only, then
    the NLMSGERR_ATTR_MSG text."""
    flags = CAPPED
    tail = b""
    if text:
        flags |= ACK_TLVS
        payload = text.encode() + b"\0"
        tail = struct.pack("=HH", 4 + len(payload), 1) + payload + b"\0" * (-len(payload) % 4)
    body = struct.pack("=i", -code) + (request[:16] if request else bytes(16)) + tail
    return msg(netlink.NLMSG_ERROR, flags, body, seq)


def done(seq: int, code: int = 0) -> bytes:
    return msg(netlink.NLMSG_DONE, 2, struct.pack("=i", -code), seq)


class StandIn:
    """A netlink socket whose kernel is a function: sent datagram -> list of reply datagrams."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []

    def send(self, data) -> None:
        self.sent.append(bytes(data))
        self.queue.extend(self.kernel(bytes(data)))

    def recvmsg(self, size):
        return self.queue.pop(0), [], 0, None

    def recv(self, size, flags=0):
        if not self.queue:
            raise BlockingIOError
        return self.queue.pop(0)


def split(datagram: bytes) -> list[tuple[int, int, int]]:
    """(type, flags, seq) of each message in a datagram."""
    found, pos = [], 0
    while pos < len(datagram):
        length, msg_type, flags, seq, _ = HEADER.unpack_from(datagram, pos)
        found.append((msg_type, flags, seq))
        pos += (length + 3) & ~3
    return found


def test_requests_share_a_datagram_and_get_their_own_answers():
    def kernel(datagram):
        (t1, f1, s1), (t2, f2, s2), (t3, f3, s3) = split(datagram)
        # The dump's parts and the acks interleave, and the answers come in two datagrams.
        return [msg(99, 2, b"a", s2) + error(s1, 0), msg(99, 2, b"b", s2) + error(s3, errno.EEXIST, text="exists") + done(s2)]

    sock = NetlinkSocket(StandIn(kernel))
    first, dump, third = sock.exchange([(msg(30), "first"), (msg(31, netlink.NLM_F_DUMP), "the dump"), (msg(32), "third")])
    assert first == []
    assert [m[16:] for m in dump] == [b"a", b"b"]
    assert isinstance(third, NetlinkError) and third.errno == errno.EEXIST and third.op == "third"
    assert str(third) == f"third: {third.strerror} (exists)"
    sent = split(sock._sock.sent[0])
    # Non-dumps ask for an ack; the dump does not; every message has its own sequence number.
    assert [(t, f) for t, f, _ in sent] == [(30, 0x5), (31, 0x301), (32, 0x5)]
    assert len({s for _, _, s in sent}) == 3


def test_request_raises_the_error():
    sock = NetlinkSocket(StandIn(lambda d: [error(split(d)[0][2], errno.ENODEV, d, "no such device")]))
    with pytest.raises(NetlinkError) as caught:
        sock.request(msg(18), "get link eth9")
    assert (caught.value.errno, caught.value.extack) == (errno.ENODEV, "no such device")


def test_a_dump_that_fails_midway_reports_the_error_in_done():
    sock = NetlinkSocket(StandIn(lambda d: [msg(99, 2, b"x", split(d)[0][2]) + done(split(d)[0][2], errno.EBUSY)]))
    with pytest.raises(NetlinkError) as caught:
        sock.request(msg(18, netlink.NLM_F_DUMP), "list links")
    assert caught.value.errno == errno.EBUSY


def test_an_interrupted_dump_is_asked_again():
    answers = iter([True, True, False])

    def kernel(datagram):
        seq = split(datagram)[0][2]
        flags = 2 | (netlink.NLM_F_DUMP_INTR if next(answers) else 0)
        return [msg(99, flags, b"x", seq) + done(seq)]

    stand_in = StandIn(kernel)
    assert len(NetlinkSocket(stand_in).request(msg(18, netlink.NLM_F_DUMP), "list links")) == 1
    assert len(stand_in.sent) == 3


def test_a_dump_kept_interrupted_gives_up():
    def kernel(datagram):
        seq = split(datagram)[0][2]
        return [msg(99, 2 | netlink.NLM_F_DUMP_INTR, b"x", seq) + done(seq)]

    with pytest.raises(NetlinkError) as caught:
        NetlinkSocket(StandIn(kernel)).request(msg(18, netlink.NLM_F_DUMP), "list links")
    assert caught.value.errno == errno.EINTR


def test_late_answers_to_earlier_requests_are_skipped():
    def kernel(datagram):
        seq = split(datagram)[0][2]
        return [error(seq - 1, errno.EIO) + msg(99, 0, b"stale", seq - 1) + msg(99, 0, b"mine", seq) + error(seq, 0)]

    sock = NetlinkSocket(StandIn(kernel))
    sock._seq = 10
    assert [m[16:] for m in sock.request(msg(18), "get")] == [b"mine"]


def test_two_dumps_in_one_batch_are_refused():
    with pytest.raises(ValueError):
        NetlinkSocket(StandIn(lambda d: [])).exchange([(msg(18, netlink.NLM_F_DUMP), "a"), (msg(22, netlink.NLM_F_DUMP), "b")])


def test_a_truncated_reply_is_an_error():
    class Truncating(StandIn):
        def recvmsg(self, size):
            return self.queue.pop(0), [], netlink.MSG_TRUNC, None

    with pytest.raises(NetlinkError) as caught:
        NetlinkSocket(Truncating(lambda d: [error(split(d)[0][2], 0)])).request(msg(18), "get")
    assert caught.value.errno == errno.EMSGSIZE


def test_a_batch_reads_every_answer_and_raises_the_first_error():
    def kernel(datagram):
        parts = split(datagram)
        return [error(parts[1][2], 0) + error(parts[2][2], errno.ENOENT, text="no such set") + error(parts[3][2], 0)]

    sock = NetlinkSocket(StandIn(kernel))
    batch = [msg(0x10), msg(0xa0c, netlink.NLM_F_ACK), msg(0xa0c, netlink.NLM_F_ACK), msg(0xa0c, netlink.NLM_F_ACK),
             msg(0x11)]
    with pytest.raises(NetlinkError) as caught:
        sock.send_batch(batch, "add elements")
    assert (caught.value.errno, caught.value.extack, caught.value.op) == (errno.ENOENT, "no such set", "add elements")
    assert sock._sock.queue == []  # everything was read: nothing is left to confuse the next request
    assert all(f & netlink.NLM_F_REQUEST for _, f, _ in split(sock._sock.sent[0]))


def test_a_batch_without_errors_returns():
    sock = NetlinkSocket(StandIn(lambda d: [error(s, 0) for _, f, s in split(d) if f & netlink.NLM_F_ACK]))
    sock.send_batch([msg(0x10), msg(0xa0c, netlink.NLM_F_ACK), msg(0x11)], "add element")


def test_malformed_replies_are_an_error_not_a_hang():
    sock = NetlinkSocket(StandIn(lambda d: [struct.pack("=IHHII", 8, 2, 0, split(d)[0][2], 0)]))
    with pytest.raises(NetlinkError) as caught:
        sock.request(msg(18), "get")
    assert caught.value.errno == errno.EPROTO


def test_no_requests_send_nothing():
    stand_in = StandIn(lambda d: [])
    assert NetlinkSocket(stand_in).exchange([]) == [] and stand_in.sent == []


def test_many_requests_go_in_datagrams_of_a_bounded_size():
    """Every answer to a datagram is queued at once: more requests than the receive buffer
    has room for go in several datagrams."""
    stand_in = StandIn(lambda d: [b"".join(error(seq, 0) for _, _, seq in split(d))])
    outcomes = NetlinkSocket(stand_in).exchange([(msg(18), f"get {i}") for i in range(netlink.PER_DATAGRAM * 2 + 5)])
    assert outcomes == [[]] * (netlink.PER_DATAGRAM * 2 + 5)
    assert [len(split(d)) for d in stand_in.sent] == [netlink.PER_DATAGRAM, netlink.PER_DATAGRAM, 5]


def test_batch_changes_ask_for_no_ack():
    stand_in = StandIn(lambda d: [])
    NetlinkSocket(stand_in).send_batch([msg(0x10), msg(0xa0c, netlink.NLM_F_ACK), msg(0x11)], "add")
    assert all(not f & netlink.NLM_F_ACK for _, f, _ in split(stand_in.sent[0]))


def test_socket_errors_are_netlink_errors():
    class Overflowing(StandIn):
        def recvmsg(self, size):
            raise OSError(errno.ENOBUFS, "No buffer space available")

    class Refusing(StandIn):
        def send(self, data):
            raise OSError(errno.EPERM, "Operation not permitted")

    with pytest.raises(NetlinkError) as caught:
        NetlinkSocket(Overflowing(lambda d: [])).request(msg(18), "get link")
    assert (caught.value.errno, caught.value.op) == (errno.ENOBUFS, "get link")
    with pytest.raises(NetlinkError) as caught:
        NetlinkSocket(Refusing(lambda d: [])).send_batch([msg(0x10), msg(0x11)], "add elements")
    assert (caught.value.errno, caught.value.op) == (errno.EPERM, "add elements")


def test_a_batch_that_overflows_reads_what_was_kept_and_fails():
    """More failures than the receive buffer holds: ENOBUFS once, then the answers that
    fitted; the batch fails and nothing is left for the next one."""
    class Overflowing(StandIn):
        overflowed = False

        def recv(self, size, flags=0):
            if self.queue and not self.overflowed:
                self.overflowed = True
                raise OSError(errno.ENOBUFS, "No buffer space available")
            return super().recv(size, flags)

    sock = NetlinkSocket(Overflowing(lambda d: [error(seq, errno.ENOENT) for _, _, seq in split(d)[1:-1]]))
    with pytest.raises(NetlinkError) as caught:
        sock.send_batch([msg(0x10), *[msg(0xa0e)] * 5, msg(0x11)], "delete elements")
    assert caught.value.errno == errno.ENOBUFS and sock._sock.queue == []


def test_a_batch_ignores_answers_left_from_an_earlier_exchange():
    stand_in = StandIn(lambda d: [])
    sock = NetlinkSocket(stand_in)
    stand_in.queue.append(error(0, errno.ENOENT))  # an answer to a request abandoned before
    sock.send_batch([msg(0x10), msg(0xa0c), msg(0x11)], "add")
    assert stand_in.queue == []


def test_a_batch_whose_answers_cannot_be_read_fails_at_once():
    """A read error other than ENOBUFS repeats (a closed socket, say): the batch fails
    instead of reading on."""
    class Broken(StandIn):
        reads = 0

        def recv(self, size, flags=0):
            self.reads += 1
            if self.reads > 3:  # a reader that keeps going would never stop: end it
                raise BlockingIOError
            raise OSError(errno.EBADF, "Bad file descriptor")

    stand_in = Broken(lambda d: [])
    with pytest.raises(NetlinkError) as caught:
        NetlinkSocket(stand_in).send_batch([msg(0x10), msg(0xa0c), msg(0x11)], "add")
    assert caught.value.errno == errno.EBADF and stand_in.reads == 1
