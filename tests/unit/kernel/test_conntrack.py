"""kernel/conntrack.delete_entries_to_port on recorded dumps, with a stand-in socket: which
entries it asks the kernel to delete."""

import pytest

import conntrack_replies
from cni_bridge.kernel import conntrack, nfnl


class RecordingSocket:
    def __init__(self, dump: list[str]):
        self.dump = [bytes.fromhex(message) for message in dump]
        self.deletes: list[bytes] = []

    def request(self, message: bytes, op: str) -> list[bytes]:
        return self.dump

    def exchange(self, requests: list[tuple[bytes, str]]) -> list:
        self.deletes += [message for message, _ in requests]
        return [[] for _ in requests]


def deleted_sources(sock: RecordingSocket, family: int) -> list[str]:
    sources = []
    for message in sock.deletes:
        ip = nfnl.CT_MSG.decode(message)[1]["CTA_TUPLE_ORIG"]["CTA_TUPLE_IP"]
        sources.append(ip["CTA_IP_V4_SRC" if family == 4 else "CTA_IP_V6_SRC"])
    return sources


@pytest.mark.parametrize("family, dump, destinations, expected", [
    (4, conntrack_replies.DUMP_IPV4, None, ["10.0.0.1", "10.0.0.3"]),
    (4, conntrack_replies.DUMP_IPV4, {"10.0.0.2"}, ["10.0.0.1", "10.0.0.3"]),
    (4, conntrack_replies.DUMP_IPV4, {"10.0.0.9", "127.0.0.1"}, []),
    (6, conntrack_replies.DUMP_IPV6, {"fd00:0:0::2"}, ["fd00::1"]),  # compared as addresses, not text
    (6, conntrack_replies.DUMP_IPV6, {"fd00::9"}, []),
])
def test_only_entries_to_the_given_destinations_are_deleted(monkeypatch, family, dump, destinations, expected):
    sock = RecordingSocket(dump)
    monkeypatch.setattr(conntrack, "_socket", sock)
    assert conntrack.delete_entries_to_port(family, 17, 5353, destinations) == len(expected)
    assert deleted_sources(sock, family) == expected
