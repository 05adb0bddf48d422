"""Numeric config fields at the edges of their kernel ranges (cni_bridge/models.py): the
edge values reach the kernel as configured, and one past the edge is refused with error
7 naming the field, with nothing made and no traceback."""

import pytest

pytestmark = pytest.mark.privileged

U32_MAX = 2**32 - 1
ROUTE = "192.168.60.0/24"


@pytest.fixture
def netns_prefix() -> str:
    return "val"


def test_route_fields_at_their_highest_reach_the_kernel_unchanged(rig):
    route = {"dst": ROUTE, "mtu": 65520, "advmss": 65495, "priority": U32_MAX, "table": U32_MAX}
    c = rig.container()
    result = rig.add(rig.conf(ipam={"routes": [route]}), c)
    assert result["routes"] == [route]
    (installed,) = c.ip_json("-4", "route", "show", "table", str(U32_MAX))
    assert (installed["dst"], installed["metric"]) == (ROUTE, U32_MAX)
    assert installed["metrics"] == [{"mtu": 65520, "advmss": 65495}]


@pytest.mark.parametrize("mtu", [68, 65535])
def test_link_mtu_at_its_edges(rig, mtu):
    c = rig.container()
    result = rig.add(rig.conf(mtu=mtu), c)
    assert rig.bridge_link()["mtu"] == mtu
    assert rig.host.link(result["interfaces"][1]["name"])["mtu"] == mtu
    assert c.link("eth0")["mtu"] == mtu


@pytest.mark.parametrize(
    "top, ipam, location, message",
    [
        ({}, {"routes": [{"dst": ROUTE, "mtu": 65521}]}, "ipam.routes.0.mtu", "less than or equal to 65520"),
        ({}, {"routes": [{"dst": ROUTE, "advmss": 65496}]}, "ipam.routes.0.advmss", "less than or equal to 65495"),
        ({}, {"routes": [{"dst": ROUTE, "priority": U32_MAX + 1}]}, "ipam.routes.0.priority", f"less than or equal to {U32_MAX}"),
        ({}, {"routes": [{"dst": ROUTE, "table": U32_MAX + 1}]}, "ipam.routes.0.table", f"less than or equal to {U32_MAX}"),
        ({}, {"routes": [{"dst": ROUTE, "scope": 255}]}, "ipam.routes.0.scope", "less than or equal to 254"),
        ({}, {"routes": [{"dst": ROUTE, "table": -1}]}, "ipam.routes.0.table", "greater than or equal to 0"),
        ({"mtu": 65536}, {}, "mtu", "less than or equal to 65535"),
        ({"vlan": 4095}, {}, "vlan", "less than or equal to 4094"),
        ({"vlanTrunk": [{"id": 0}]}, {}, "vlanTrunk.0.id", "greater than or equal to 1"),
    ],
)
def test_one_past_the_range_is_refused_before_anything_is_made(rig, top, ipam, location, message):
    c = rig.container()
    res = rig.exec("ADD", rig.conf(ipam=ipam, **top), c)
    assert res.code == 1 and res.out["code"] == 7, res
    assert res.out["details"] == f"{location}: Input should be {message}"
    assert "Traceback" not in res.err and len(res.err.splitlines()) <= 1, res.err
    rig.assert_no_attachment(c)
    assert rig.leases() == {}
