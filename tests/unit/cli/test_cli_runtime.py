"""The libcni behaviour of cni_bridge/cli/runtime.py, against tiny fake plugins that record
what they were given (tests/unit/cli/fake_plugins.py). No root, no kernel."""

import base64
import json
import os
import stat

import pytest

from cni_bridge.cli import runtime
from cni_bridge.cli.runtime import (
    CacheEntry, ConfigError, InvalidArgument, NetworkList, PluginError, Runtime, RuntimeConf,
)
from fake_plugins import Fakes


@pytest.fixture
def fakes(tmp_path) -> Fakes:
    fakes = Fakes(tmp_path / "plugins")
    for name in ("first", "second", "third"):
        fakes.make(name)
    return fakes


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def rt(fakes, cache_dir) -> Runtime:
    return Runtime([fakes.dir], cache_dir)


def conflist(version="1.1.0", types=("first", "second", "third"), name="net1", **extra) -> NetworkList:
    doc = {"cniVersion": version, "name": name, "plugins": [{"type": t, "opt": n} for n, t in enumerate(types)], **extra}
    return NetworkList.from_bytes(json.dumps(doc, indent=1).encode(), "test")


def conf_of(net, plugin_type):
    return next(p for p in net.plugins if p["type"] == plugin_type)


# ---- configs ---------------------------------------------------------------------------


def write(path, doc):
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_load_by_name_conflists_first_then_single_configs_in_file_order(tmp_path):
    d = tmp_path / "net.d"
    d.mkdir()
    write(d / "10-a.conf", {"cniVersion": "1.0.0", "name": "same", "type": "from-conf"})
    write(d / "20-b.conflist", {"cniVersion": "1.0.0", "name": "same", "plugins": [{"type": "from-list"}]})
    write(d / "05-c.json", {"cniVersion": "0.4.0", "name": "single", "type": "bridge"})
    write(d / "00-broken.conflist", "{not json")
    write(d / "30-ignored.txt", {"name": "txt", "type": "x"})
    assert runtime.load_network("same", str(d)).types == ["from-list"]
    single = runtime.load_network("single", str(d))
    assert (single.name, single.cni_version, single.types) == ("single", "0.4.0", ["bridge"])
    assert [n.name for n in runtime.list_networks(str(d))] == ["same", "single"]
    with pytest.raises(ConfigError, match=r"no network config named 'txt' in .*net.d \(it has same, single\)"):
        runtime.load_network("txt", str(d))


def test_single_config_is_wrapped_as_libcni_wraps_it(tmp_path):
    path = write(tmp_path / "x.conf", {"cniVersion": "1.0.0", "name": "n", "type": "bridge", "bridge": "br9"})
    net = runtime.load_network(str(path), "/nonexistent")
    assert net.plugins == [{"cniVersion": "1.0.0", "name": "n", "type": "bridge", "bridge": "br9"}]
    # the bytes libcni caches for a single config: ConfListFromConf's compact, sorted JSON
    assert json.loads(net.raw) == {"cniVersion": "1.0.0", "name": "n", "plugins": [net.plugins[0]]}
    assert net.raw.startswith(b'{"cniVersion":"1.0.0","name":"n","plugins":[{')


def test_a_path_is_read_as_given_and_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        runtime.load_network(str(tmp_path / "missing.conflist"), str(tmp_path))
    bad = write(tmp_path / "bad.conflist", {"cniVersion": "1.0.0", "name": "n", "plugins": [{"nottype": 1}]})
    with pytest.raises(ConfigError, match="bad.conflist: plugin 0 has no 'type'"):
        runtime.load_network(str(bad), str(tmp_path))


def test_cni_versions_picks_the_newest_the_runtime_speaks():
    doc = {"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "9.9.9", "1.1.0"], "name": "n", "plugins": [{"type": "a"}]}
    assert NetworkList.from_bytes(json.dumps(doc).encode()).cni_version == "1.1.0"


# ---- ADD ---------------------------------------------------------------------------------


def test_add_chains_plugins_with_prev_result_and_caches_the_result(rt, fakes, cache_dir):
    fakes.set("first", ip="10.0.0.2/24")
    net = conflist()
    attach = RuntimeConf("ctr1", "/proc/self/ns/net", "eth1", [["K", "V"], ["IgnoreUnknown", "1"]])
    result = rt.add(net, attach)

    assert fakes.order() == [("first", "ADD"), ("second", "ADD"), ("third", "ADD")]
    calls = fakes.calls("ADD")
    assert "prevResult" not in calls[0]["conf"]
    assert calls[1]["conf"]["prevResult"]["interfaces"] == [{"name": "first"}]
    assert calls[2]["conf"]["prevResult"]["interfaces"] == [{"name": "first"}, {"name": "second"}]
    assert result["interfaces"] == [{"name": "first"}, {"name": "second"}, {"name": "third"}]
    assert result["ips"] == [{"address": "10.0.0.2/24"}]
    for n, call in enumerate(calls):
        # the list's name and version in every plugin's config, its own keys kept
        assert (call["conf"]["name"], call["conf"]["cniVersion"], call["conf"]["opt"]) == ("net1", "1.1.0", n)
        assert call["env"] == {
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/proc/self/ns/net",
            "CNI_IFNAME": "eth1", "CNI_ARGS": "K=V;IgnoreUnknown=1", "CNI_PATH": str(fakes.dir),
        }

    path = cache_dir / "results" / "net1-ctr1-eth1"
    cached = json.loads(path.read_text())
    assert list(cached) == ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs", "result"]
    assert cached["kind"] == "cniCacheV1" and cached["containerId"] == "ctr1" and cached["ifName"] == "eth1"
    assert cached["networkName"] == "net1" and cached["netns"] == "/proc/self/ns/net"
    assert base64.b64decode(cached["config"]) == net.raw  # the list's bytes, as Go writes a []byte
    assert cached["cniArgs"] == [["K", "V"], ["IgnoreUnknown", "1"]]
    assert cached["result"] == result
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_version_is_asked_first_once_per_plugin(rt, fakes):
    rt.add(conflist(), RuntimeConf("c", "/x", "eth0"))
    rt.add(conflist(), RuntimeConf("d", "/x", "eth0"))
    commands = [(c["plugin"], c["command"]) for c in fakes.calls(skip_version=False)]
    assert commands[:3] == [("first", "VERSION"), ("second", "VERSION"), ("third", "VERSION")]
    assert [c for c in commands if c[1] == "VERSION"] == commands[:3]
    assert fakes.calls(skip_version=False)[0]["conf"] == {"cniVersion": "1.1.0"}


def test_a_plugin_without_the_configs_version_is_refused_naming_both(rt, fakes):
    fakes.set("second", versions=["0.3.1", "0.4.0", "1.0.0"])
    with pytest.raises(ConfigError) as caught:
        rt.add(conflist("1.1.0"), RuntimeConf("c", "/x", "eth0"))
    text = str(caught.value)
    assert "plugin second" in text and "does not support config version '1.1.0'" in text
    assert "0.3.1, 0.4.0, 1.0.0" in text
    assert fakes.order() == []  # refused before any ADD
    assert caught.value.exit_code == 3


def test_runtime_config_only_for_declared_capabilities(rt, fakes):
    doc = {"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "first", "capabilities": {"portMappings": True, "mac": False}},
        {"type": "second", "capabilities": {"ips": True, "mac": True}},
        {"type": "third"},
    ]}
    net = NetworkList.from_bytes(json.dumps(doc).encode())
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "ips": ["10.0.0.9/24"], "mac": "02:00:00:00:00:09"}
    rt.add(net, RuntimeConf("c", "/x", "eth0", capability_args=caps))
    confs = {c["plugin"]: c["conf"] for c in fakes.calls("ADD")}
    assert confs["first"]["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert confs["second"]["runtimeConfig"] == {"ips": caps["ips"], "mac": caps["mac"]}
    assert "runtimeConfig" not in confs["third"]


def test_failed_add_is_undone_in_reverse_and_reports_the_plugin(rt, fakes, cache_dir):
    fakes.set("second", fail={"ADD": [7, "bad config"]})
    with pytest.raises(PluginError) as caught:
        rt.add(conflist(), RuntimeConf("c", "/x", "eth0"))
    err = caught.value
    assert (err.plugin, err.command, err.code, err.msg, err.details) == ("second", "ADD", 7, "bad config", "from second")
    assert str(err) == "plugin second failed (ADD): code 7: bad config: from second"
    assert fakes.order() == [("first", "ADD"), ("second", "ADD"), ("second", "DEL"), ("first", "DEL")]
    assert err.undone == ["second", "first"] and err.undo_errors == []
    # the DELs got what the earlier plugins returned
    assert fakes.calls("DEL")[0]["conf"]["prevResult"]["interfaces"] == [{"name": "first"}]
    assert not (cache_dir / "results" / "net1-c-eth0").exists()


def test_failed_undo_is_reported_too(rt, fakes):
    fakes.set("second", fail={"ADD": [11, "try later"]})
    fakes.set("first", fail={"DEL": [5, "io"]})
    with pytest.raises(PluginError) as caught:
        rt.add(conflist(), RuntimeConf("c", "/x", "eth0"))
    assert caught.value.code == 11
    assert [(e.plugin, e.code) for e in caught.value.undo_errors] == [("first", 5)]


def test_a_result_that_is_not_json_is_a_plugin_error(rt, fakes):
    fakes.set("third", garbage=True)
    with pytest.raises(PluginError, match="plugin third failed \\(ADD\\): no error code: printed something that is not JSON"):
        rt.add(conflist(), RuntimeConf("c", "/x", "eth0"))


def test_missing_plugin_and_bad_names(rt):
    with pytest.raises(ConfigError, match="plugin nosuch not found in"):
        rt.add(conflist(types=("first", "nosuch")), RuntimeConf("c", "/x", "eth0"))
    with pytest.raises(InvalidArgument, match="CNI_CONTAINERID"):
        rt.add(conflist(), RuntimeConf("bad/id", "/x", "eth0"))
    with pytest.raises(InvalidArgument, match="CNI_IFNAME"):
        rt.add(conflist(), RuntimeConf("c", "/x", "much-too-long-ifname"))


# ---- DEL, CHECK ---------------------------------------------------------------------------


def test_del_runs_in_reverse_with_the_cached_result_then_drops_it(rt, fakes, cache_dir):
    net = conflist()
    result = rt.add(net, RuntimeConf("c", "/proc/self/ns/net", "eth0"))
    fakes.reset()
    rt.delete(net, RuntimeConf("c", "/proc/self/ns/net", "eth0"))
    assert fakes.order() == [("third", "DEL"), ("second", "DEL"), ("first", "DEL")]
    assert all(c["conf"]["prevResult"] == result for c in fakes.calls())
    assert all(c["env"]["CNI_NETNS"] == "/proc/self/ns/net" for c in fakes.calls())
    assert not (cache_dir / "results" / "net1-c-eth0").exists()


def test_del_without_a_cache_entry_and_with_the_netns_gone(rt, fakes, tmp_path):
    rt.delete(conflist(), RuntimeConf("c", str(tmp_path / "gone"), "eth0"))
    assert fakes.order() == [("third", "DEL"), ("second", "DEL"), ("first", "DEL")]
    assert all("prevResult" not in c["conf"] for c in fakes.calls())
    # a netns that is no longer one is not handed to the plugins
    assert all(c["env"]["CNI_NETNS"] == "" for c in fakes.calls())


def test_del_stops_at_a_failing_plugin_and_keeps_the_cache(rt, fakes, cache_dir):
    net = conflist()
    rt.add(net, RuntimeConf("c", "/x", "eth0"))
    fakes.set("second", fail={"DEL": [5, "busy"]})
    with pytest.raises(PluginError, match="plugin second failed \\(DEL\\)"):
        rt.delete(net, RuntimeConf("c", "/x", "eth0"))
    assert (cache_dir / "results" / "net1-c-eth0").exists()


def test_del_before_0_4_0_sends_no_prev_result(rt, fakes):
    net = conflist("0.3.1")
    rt.add(net, RuntimeConf("c", "/x", "eth0"))
    fakes.reset()
    rt.delete(net, RuntimeConf("c", "/x", "eth0"))
    assert all("prevResult" not in c["conf"] for c in fakes.calls())


def test_cached_result_is_converted_to_the_configs_version(rt, fakes):
    """A cached 1.1.0 result, read for a list that is now 0.4.0: prevResult in 0.4.0 shape."""
    fakes.set("first", ip="10.0.0.2/24")
    rt.add(conflist("1.1.0"), RuntimeConf("c", "/x", "eth0"))
    fakes.reset()
    rt.delete(conflist("0.4.0"), RuntimeConf("c", "/x", "eth0"))
    prev = fakes.calls()[0]["conf"]["prevResult"]
    assert prev["cniVersion"] == "0.4.0" and prev["ips"] == [{"version": "4", "address": "10.0.0.2/24"}]


def test_check_runs_in_order_with_the_cached_result(rt, fakes):
    net = conflist("1.0.0")
    result = rt.add(net, RuntimeConf("c", "/x", "eth0"))
    fakes.reset()
    rt.check(net, RuntimeConf("c", "/x", "eth0"))
    assert fakes.order() == [("first", "CHECK"), ("second", "CHECK"), ("third", "CHECK")]
    assert all(c["conf"]["prevResult"] == result for c in fakes.calls())
    fakes.set("second", fail={"CHECK": [999, "veth gone"]})
    with pytest.raises(PluginError, match="plugin second failed \\(CHECK\\): code 999: veth gone"):
        rt.check(net, RuntimeConf("c", "/x", "eth0"))


def test_check_needs_0_4_0_and_honours_disable_check(rt, fakes):
    with pytest.raises(ConfigError, match="does not support the CHECK command"):
        rt.check(conflist("0.3.1"), RuntimeConf("c", "/x", "eth0"))
    rt.check(conflist("1.0.0", disableCheck=True), RuntimeConf("c", "/x", "eth0"))
    assert fakes.order() == []


# ---- GC, STATUS ---------------------------------------------------------------------------


def test_gc_deletes_invalid_cached_attachments_then_sends_valid_ones(rt, fakes, cache_dir):
    net = conflist()
    rt.add(net, RuntimeConf("keep", "/x", "eth0"))
    rt.add(net, RuntimeConf("stale", "/gone", "eth1", [["A", "1"]], {"portMappings": [{"hostPort": 1}]}))
    rt.add(conflist(name="other"), RuntimeConf("stale", "/gone", "eth1"))
    fakes.reset()

    removed = rt.gc(net, [("keep", "eth0")])

    assert [(e.container_id, e.ifname) for e in removed] == [("stale", "eth1")]
    assert fakes.order() == [("third", "DEL"), ("second", "DEL"), ("first", "DEL"),
                             ("first", "GC"), ("second", "GC"), ("third", "GC")]
    deleted = fakes.calls("DEL")[0]
    assert deleted["env"]["CNI_CONTAINERID"] == "stale" and deleted["env"]["CNI_IFNAME"] == "eth1"
    assert deleted["env"]["CNI_ARGS"] == "A=1"  # the cached args, as libcni's GC reuses them
    gc = fakes.calls("GC")[0]
    assert gc["conf"]["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
    assert gc["conf"]["cni.dev/attachments"] == gc["conf"]["cni.dev/valid-attachments"]
    assert gc["env"]["CNI_CONTAINERID"] == "" and gc["env"]["CNI_NETNS"] == ""
    names = sorted(os.listdir(cache_dir / "results"))
    assert names == ["net1-keep-eth0", "other-stale-eth1"]


def test_gc_before_1_1_0_only_deletes(rt, fakes):
    net = conflist("1.0.0")
    rt.add(net, RuntimeConf("stale", "/gone", "eth0"))
    fakes.reset()
    rt.gc(net, [])
    assert [c for _, c in fakes.order()] == ["DEL", "DEL", "DEL"]


def test_status_asks_every_plugin(rt, fakes):
    assert rt.status(conflist()) is True
    assert fakes.order() == [("first", "STATUS"), ("second", "STATUS"), ("third", "STATUS")]
    fakes.set("third", fail={"STATUS": [50, "not available"]})
    with pytest.raises(PluginError) as caught:
        rt.status(conflist())
    assert (caught.value.plugin, caught.value.code) == ("third", 50)
    fakes.reset()
    assert rt.status(conflist("1.0.0")) is False and fakes.order() == []


# ---- the cache, as other runtimes write it ---------------------------------------------------


def go_entry(network, container_id, ifname, config: bytes, **fields) -> dict:
    """An entry as libcni's cacheAdd writes it (containerd, podman, cnitool)."""
    doc = {"kind": "cniCacheV1", "containerId": container_id, "config": base64.b64encode(config).decode(),
           "ifName": ifname, "networkName": network}
    doc.update(fields)
    return doc


def test_entries_written_by_libcni_are_read(rt, fakes, cache_dir):
    results = cache_dir / "results"
    results.mkdir(parents=True)
    raw = json.dumps({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "first"}, {"type": "second"}]}).encode()
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.85.0.7/16", "gateway": "10.85.0.1"}]}
    write(results / "k8s-abc123-eth0", go_entry(
        "k8s", "abc123", "eth0", raw, netns="/var/run/netns/cni-1234",
        cniArgs=[["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]],
        capabilityArgs={"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]},
        result=result))
    write(results / "k8s-legacy-eth0", {"cniVersion": "0.4.0", "ips": []})  # pre-cniCacheV1: no attachment
    write(results / "junk", "not json")

    [entry] = rt.cached_attachments()
    assert (entry.network, entry.container_id, entry.ifname, entry.netns) == ("k8s", "abc123", "eth0", "/var/run/netns/cni-1234")
    assert entry.network_list().types == ["first", "second"] and entry.result == result
    assert rt.cached_attachments("other") == []
    assert rt.cached("k8s", "legacy", "eth0").result == {"cniVersion": "0.4.0", "ips": []}

    # and DEL of it behaves as libcni: cached args and result, entry gone
    rt.delete(entry.network_list(), entry.runtime_conf())
    calls = fakes.calls("DEL")
    assert [c["plugin"] for c in calls] == ["second", "first"]
    assert calls[0]["conf"]["prevResult"] == result
    assert calls[0]["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=web"
    assert not (results / "k8s-abc123-eth0").exists()


def test_our_entries_are_what_libcni_reads(rt, cache_dir):
    """The fields libcni's cachedInfo decodes, with Go's types: config is base64 of the list."""
    net = conflist()
    rt.add(net, RuntimeConf("c", "/x", "eth0", capability_args={"mac": "02:00:00:00:00:01"}))
    doc = json.loads((cache_dir / "results" / "net1-c-eth0").read_text())
    assert isinstance(doc["config"], str) and json.loads(base64.b64decode(doc["config"]))["name"] == "net1"
    assert doc["capabilityArgs"] == {"mac": "02:00:00:00:00:01"} and "cniArgs" not in doc  # omitempty
    entry = runtime.read_cache_entry(str(cache_dir / "results" / "net1-c-eth0"), legacy=False)
    assert isinstance(entry, CacheEntry) and entry.network_list().raw == net.raw


def test_runtime_can_run_plugins_under_a_prefix(fakes, cache_dir, tmp_path):
    """exec_prefix: how tests run the plugins inside a namespace (`ip netns exec NODE`)."""
    marker = tmp_path / "prefix-ran"
    prefix = tmp_path / "prefix"
    prefix.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexec \"$@\"\n")
    prefix.chmod(0o755)
    Runtime([fakes.dir], cache_dir, exec_prefix=[prefix]).add(conflist(), RuntimeConf("c", "/x", "eth0"))
    assert len(marker.read_text().splitlines()) == 6  # 3 VERSION + 3 ADD
