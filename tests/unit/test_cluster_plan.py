"""scripts/cluster without a kernel: which pods `test` picks for each check, what it says
when a cluster lacks the pods for one, and the options it refuses. The traffic itself is
tests/e2e/test_cluster.py's."""

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cluster"


@pytest.fixture(scope="module")
def cluster():
    loader = importlib.machinery.SourceFileLoader("cluster_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader("cluster_script", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def state(nodes: int, pods: dict) -> dict:
    """A state.json as `up` and `pod` write it: pods {name: (node, ports)}."""
    return {
        "prefix": "cx",
        "nodes": [{"number": k, "netns": f"cx-node{k}", "address": f"192.0.2.{k}", "pod_cidr": f"10.9.{k}.0/24"}
                  for k in range(1, nodes + 1)],
        "outside": {"netns": "cx-outside", "address": "192.0.2.254"},
        "pods": {name: {"node": node, "netns": f"cx-{name}", "address": f"10.9.{node}.{10 + n}", "ports": ports}
                 for n, (name, (node, ports)) in enumerate(sorted(pods.items()))},
    }


def rows(checks) -> list[tuple]:
    return [(c.what, c.netns, c.address, c.port, c.want_name, c.want_peer, c.missing) for c in checks]


def test_a_full_cluster_gets_every_check_with_its_own_pods(cluster):
    checks = cluster.plan_checks(state(3, {"a": (1, []), "b": (1, []), "c": (2, [[18400, 8080]])}))
    # pods: a 10.9.1.10, b 10.9.1.11, c 10.9.2.12
    assert rows(checks) == [
        ("same-node pod to pod", "cx-a", "10.9.1.11", 8080, "b", "10.9.1.10", None),
        ("cross-node pod to pod (no SNAT)", "cx-a", "10.9.2.12", 8080, "c", "10.9.1.10", None),
        ("node to remote pod", "cx-node1", "10.9.2.12", 8080, "c", "192.0.2.1", None),
        ("pod to outside (SNAT to its node)", "cx-a", "192.0.2.254", 8080, "outside", "192.0.2.1", None),
        ("hostPort from another node", "cx-node1", "192.0.2.2", 18400, "c", None, None),
        ("hostPort from a pod on another node", "cx-a", "192.0.2.2", 18400, "c", None, None),
    ]


def test_the_pair_on_one_node_need_not_be_the_first_pods(cluster):
    checks = cluster.plan_checks(state(2, {"a": (2, []), "b": (1, []), "c": (1, [])}))
    same, cross = checks[0], checks[1]
    assert (same.netns, same.want_name) == ("cx-b", "c")
    assert (cross.netns, cross.want_name) == ("cx-b", "a")


def test_missing_pods_are_named_and_nothing_is_run_for_them(cluster):
    checks = cluster.plan_checks(state(1, {"a": (1, [[18400, 8080]])}))
    assert [(c.what, c.missing) for c in checks] == [
        ("same-node pod to pod", "needs two pods on one node"),
        ("cross-node pod to pod (no SNAT)", "needs pods on two nodes"),
        ("node to remote pod", "needs pods on two nodes"),
        ("pod to outside (SNAT to its node)", None),
        ("hostPort from another node", "needs two nodes"),
        ("hostPort from a pod on another node", "needs a pod off node 1"),
    ]
    assert checks[0].run() == ("not run", "needs two pods on one node")


def test_a_hostport_to_another_port_than_the_server_is_not_checked(cluster):
    checks = cluster.plan_checks(state(2, {"a": (1, [[18400, 9090]]), "b": (2, [])}))
    assert [c.missing for c in checks[-2:]] == ["needs a pod with -p HOST:8080"] * 2


@pytest.mark.parametrize("spec", ["18400", "18400:", "x:8080", "0:8080", "18400:70000", "1.2.3.4:18400:8080"])
def test_port_options_it_refuses(cluster, spec):
    with pytest.raises(cluster.Failure, match="expected HOST:CONTAINER"):
        cluster.port_option(spec)


def test_port_option(cluster):
    assert cluster.port_option("18400:8080") == [18400, 8080]


@pytest.mark.parametrize("prefix", ["cl-a", "Cl", "1cl", "", "c" * 17])
def test_prefixes_it_refuses(cluster, prefix):
    with pytest.raises(cluster.argparse.ArgumentTypeError):
        cluster.prefix_option(prefix)
