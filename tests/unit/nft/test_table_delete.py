"""table's bounded deletion over a stand-in for the kernel's batches: the generation each
batch names, and retries that end. No root needed."""

import pytest

from cni_bridge.cni.errors import CNIError
from cni_bridge.kernel.netlink import NetlinkError
from cni_bridge.nft import table


class Ruleset:
    """Holds elements by key; a batch naming another generation than the current one is
    refused (ERESTART), as the kernel does; `interference` commits a foreign change before
    the batches it names (by their number)."""

    def __init__(self, count: int, interference=()):
        self.held = {bytes([i // 256, i % 256]): table.Element("pods4", bytes([i // 256, i % 256]), comment="net/x/eth0")
                     for i in range(count)}
        self.genid = 7
        self.interference = set(interference)
        self.batches = 0

    def find(self):
        return self.genid, list(self.held.values())

    def batch(self, family, changes, genid, what):
        self.batches += 1
        if self.batches in self.interference:
            self.genid += 1  # someone else's commit, just before ours
        if genid != self.genid:
            raise NetlinkError(table.ERESTART, what)
        for _, _, element in changes:
            del self.held[element.key]
        self.genid += 1


@pytest.fixture
def ruleset(monkeypatch):
    def make(count, interference=()):
        kernel = Ruleset(count, interference)
        monkeypatch.setattr(table, "_batch", kernel.batch)
        return kernel
    return make


def test_each_batch_names_the_generation_after_our_own_last(ruleset):
    kernel = ruleset(3 * table._PER_BATCH + 1)
    assert len(table._delete_found("inet", kernel.find)) == 3 * table._PER_BATCH + 1
    assert kernel.held == {} and kernel.batches == 4  # no batch was refused


def test_interference_before_every_batch_still_ends_with_everything_deleted(ruleset):
    """More refusals in all than _TRIES, never more than one in a row: progress each time."""
    chunks = table._TRIES + 2
    kernel = ruleset(chunks * table._PER_BATCH, interference=range(1, 4 * chunks, 2))
    assert len(table._delete_found("inet", kernel.find)) == chunks * table._PER_BATCH
    assert kernel.held == {}


def test_refusals_in_a_row_give_up_with_the_error_type(ruleset):
    kernel = ruleset(5, interference=range(1, 100))
    with pytest.raises(CNIError, match="cannot delete elements"):
        table._delete_found("inet", kernel.find)
    assert len(kernel.held) == 5 and kernel.batches == table._TRIES
