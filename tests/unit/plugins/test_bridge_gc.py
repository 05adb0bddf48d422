"""bridge GC when nftables refuses every request (no nf_tables, no permission): the leases
of gone attachments still go. No root needed: the nfnetlink socket is a stand-in."""

import json
import os

import pytest

from cni_bridge.cni import skel
from cni_bridge.kernel.netlink import NetlinkError
from cni_bridge.nft import table
from cni_bridge.plugins import bridge
from ipam import host_local

EOPNOTSUPP = 95


class Refusing:
    """An nfnetlink socket whose kernel refuses everything."""

    def request(self, message, op):
        raise NetlinkError(EOPNOTSUPP, op)

    def exchange(self, requests):
        return [NetlinkError(EOPNOTSUPP, op) for _, op in requests]

    def send_batch(self, messages, op):
        raise NetlinkError(EOPNOTSUPP, op)


@pytest.fixture
def refusing_nftables(monkeypatch):
    monkeypatch.setattr(table, "_netlink", Refusing())


def network(data_dir, **options) -> dict:
    return {"cniVersion": "1.1.0", "name": "gcnet", "type": "bridge", "bridge": "gcbr0", **options,
            "ipam": {"type": "host-local", "dataDir": str(data_dir), "ranges": [[{"subnet": "10.55.0.0/24"}]]}}


def leases(data_dir) -> list[str]:
    return sorted(n for n in os.listdir(data_dir / "gcnet") if n[0].isdigit())


def gc(conf: dict, valid: list) -> tuple[int, bytes]:
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/nonexistent"}
    return skel.dispatch(bridge.PLUGIN, env, json.dumps({**conf, "cni.dev/valid-attachments": valid}).encode())


def lease_for(conf: dict, container_id: str) -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id, "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/proc/self/ns/net", "CNI_PATH": "/nonexistent"}
    code, out = skel.dispatch(host_local.PLUGIN, env, json.dumps({**conf, "type": "host-local"}).encode())
    assert code == 0, out


def test_gc_without_firewall_features_releases_leases_although_nftables_refuses(tmp_path, refusing_nftables):
    conf = network(tmp_path)
    lease_for(conf, "kept")
    lease_for(conf, "gone")
    code, out = gc(conf, [{"containerID": "kept", "ifname": "eth0"}])
    assert code == 0, out
    assert leases(tmp_path) == ["10.55.0.2"]


def test_gc_with_ipmasq_reports_nftables_and_still_releases_leases(tmp_path, refusing_nftables):
    conf = network(tmp_path, ipMasq=True)
    lease_for(conf, "gone")
    code, out = gc(conf, [])
    assert code != 0
    failure = json.loads(out)
    assert failure["code"] == 999 and "nftables" in failure["msg"], failure
    assert leases(tmp_path) == []
