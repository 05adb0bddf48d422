"""skel.dispatch: every path from environment and stdin to exit code and stdout."""

import json

import pytest

from cni_bridge.cni import errors, skel, version

GOOD_ENV = {
    "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/var/run/netns/c1",
    "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
}
CONF = {"cniVersion": "1.1.0", "name": "net1", "type": "fake"}
RESULT = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]}


class FakePlugin(skel.Plugin):
    """Records the CmdArgs of each call; ADD returns RESULT, or raises `fail` if set."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[skel.CmdArgs] = []

        def command(cmd_args):
            self.calls.append(cmd_args)
            if fail is not None:
                raise fail
            return RESULT if cmd_args.command == "ADD" else None

        super().__init__("fake plugin v0", command, command, command, command, command)


def dispatch(env_changes=None, conf=CONF, plugin=None):
    """Run dispatch; return (exit code, parsed stdout or None, the plugin)."""
    plugin = plugin or FakePlugin()
    env = {**GOOD_ENV, **(env_changes or {})}
    env = {k: v for k, v in env.items() if v is not None}
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    code, out = skel.dispatch(plugin, env, stdin)
    return code, (json.loads(out) if out else None), plugin


def assert_error(code, out, expected_code, *in_msg):
    assert code == 1
    assert out["code"] == expected_code, out
    text = f"{out['msg']} {out.get('details', '')}"
    for fragment in in_msg:
        assert fragment in text, (fragment, out)


def test_add_prints_the_result_in_the_configs_version():
    code, out, plugin = dispatch(conf={**CONF, "cniVersion": "0.3.1"})
    assert code == 0
    assert out == {"cniVersion": "0.3.1", "ips": [{"version": "4", **RESULT["ips"][0]}]}
    (call,) = plugin.calls
    assert (call.container_id, call.netns, call.ifname, call.path) == ("ctr1", "/var/run/netns/c1", "eth0", ["/opt/cni/bin"])
    assert call.network_name == "net1" and call.conf["type"] == "fake"


@pytest.mark.parametrize("command", ["DEL", "CHECK", "GC", "STATUS"])
def test_other_commands_print_nothing_on_success(command):
    code, out, plugin = dispatch({"CNI_COMMAND": command})
    assert (code, out) == (0, None)
    assert plugin.calls[0].command == command


def test_version_command():
    code, out, plugin = dispatch({"CNI_COMMAND": "VERSION"}, conf=b"")
    assert code == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": list(version.SUPPORTED_VERSIONS)}
    assert out["supportedVersions"] == ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    assert not plugin.calls


def test_no_command_prints_about_on_stderr(capsys):
    code, out, plugin = dispatch({"CNI_COMMAND": None}, conf=b"")
    assert (code, out, plugin.calls) == (0, None, [])
    captured = capsys.readouterr()
    assert "fake plugin v0" in captured.err and "1.1.0" in captured.err
    assert captured.out == ""


# ---- 1: versions ----------------------------------------------------------------------


@pytest.mark.parametrize("conf_version", [None, ""])
def test_config_without_version_is_010(conf_version):
    conf = {k: v for k, v in CONF.items() if k != "cniVersion"}
    if conf_version is not None:
        conf["cniVersion"] = conf_version
    code, out, plugin = dispatch(conf=conf)
    assert code == 0
    assert plugin.calls[0].cni_version == "0.1.0"
    assert out == {"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"}}


@pytest.mark.parametrize("conf_version", ["0.5.0", "2.0.0", "1.0", 1])
def test_unsupported_config_version(conf_version):
    code, out, plugin = dispatch(conf={**CONF, "cniVersion": conf_version})
    assert_error(code, out, errors.INCOMPATIBLE_VERSION, "incompatible CNI versions", repr(conf_version))
    assert not plugin.calls


@pytest.mark.parametrize(
    "command, too_old, new_enough",
    [("CHECK", "0.3.1", "0.4.0"), ("GC", "1.0.0", "1.1.0"), ("STATUS", "1.0.0", "1.1.0")],
)
def test_command_needs_a_recent_enough_config(command, too_old, new_enough):
    code, out, plugin = dispatch({"CNI_COMMAND": command}, conf={**CONF, "cniVersion": too_old})
    assert_error(code, out, errors.INCOMPATIBLE_VERSION, command, too_old, new_enough)
    assert out["cniVersion"] == "1.1.0" and not plugin.calls
    code, out, plugin = dispatch({"CNI_COMMAND": command}, conf={**CONF, "cniVersion": new_enough})
    assert (code, len(plugin.calls)) == (0, 1)


# ---- 4: environment -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, missing",
    [
        ("ADD", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]),
        ("ADD", ["CNI_NETNS"]),
        ("DEL", ["CNI_CONTAINERID", "CNI_IFNAME"]),
        ("CHECK", ["CNI_IFNAME"]),
    ],
)
def test_missing_environment_is_named(command, missing):
    changes = {"CNI_COMMAND": command, **{key: None for key in missing}}
    code, out, plugin = dispatch(changes, conf={**CONF, "cniVersion": "1.0.0"})
    assert_error(code, out, errors.INVALID_ENVIRONMENT, *missing)
    present = {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"} - set(missing)
    assert not [key for key in present if key in out["msg"]]
    assert not plugin.calls


@pytest.mark.parametrize("command", ["DEL", "GC", "STATUS"])
def test_netns_is_optional_where_the_spec_says(command):
    code, _, _ = dispatch({"CNI_COMMAND": command, "CNI_NETNS": None})
    assert code == 0


def test_gc_and_status_need_no_container():
    for command in ("GC", "STATUS"):
        code, _, plugin = dispatch({"CNI_COMMAND": command, "CNI_CONTAINERID": None, "CNI_IFNAME": None, "CNI_NETNS": None})
        assert code == 0 and plugin.calls[0].container_id == ""


@pytest.mark.parametrize("container_id", ["../etc", "a/b", ".hidden", "-dash", "a b", "x\n"])
def test_bad_container_id(container_id):
    code, out, _ = dispatch({"CNI_CONTAINERID": container_id})
    assert_error(code, out, errors.INVALID_ENVIRONMENT, "CNI_CONTAINERID", repr(container_id))


@pytest.mark.parametrize("ifname", [".", "..", "a/b", "eth:0", "eth 0", "a" * 16])
def test_bad_interface_name(ifname):
    code, out, _ = dispatch({"CNI_IFNAME": ifname})
    assert_error(code, out, errors.INVALID_ENVIRONMENT, "CNI_IFNAME")


@pytest.mark.parametrize("cni_args", ["FOO=1", "IP", "IP=1=2", "IgnoreUnknown=maybe"])
def test_bad_cni_args(cni_args):
    code, out, _ = dispatch({"CNI_ARGS": cni_args})
    assert_error(code, out, errors.INVALID_ENVIRONMENT, "CNI_ARGS")


def test_cni_args_reach_the_plugin():
    _, _, plugin = dispatch({"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.9"})
    assert plugin.calls[0].args == {"IgnoreUnknown": "1", "IP": "10.0.0.9"}


BAD_TEXT = {
    "not UTF-8": "\udcff",  # how os.environ hands over the byte 0xff
    "a control character": "\x1b",
    "a line break": "\n",
}


@pytest.mark.parametrize("what", list(BAD_TEXT))
@pytest.mark.parametrize("variable, good", [
    ("CNI_CONTAINERID", "ctr1"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/var/run/netns/c1"),
    ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"), ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_environment_that_is_not_clean_text_is_refused_and_named(command, variable, good, what):
    code, out, plugin = dispatch({"CNI_COMMAND": command, variable: good[:-1] + BAD_TEXT[what] + good[-1:]})
    assert_error(code, out, errors.INVALID_ENVIRONMENT, variable)
    assert not plugin.calls, "refused before the plugin runs, so before it can write anything"


@pytest.mark.parametrize("variable, longest", [
    ("CNI_CONTAINERID", "c" * 255),
    ("CNI_IFNAME", "i" * 15),
    ("CNI_NETNS", "/" + "n" * 4094),
    ("CNI_PATH", "/a:/" + "p" * 4094),
    ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=" + "v" * (16384 - 29)),
])
def test_environment_lengths(variable, longest):
    code, _, plugin = dispatch({variable: longest})
    assert code == 0 and len(plugin.calls) == 1
    too_long = longest + ("x" if variable != "CNI_PATH" else "p")
    code, out, plugin = dispatch({variable: too_long})
    assert_error(code, out, errors.INVALID_ENVIRONMENT, variable, "longer than")
    assert not plugin.calls and len(json.dumps(out)) < 500, "the error quotes a long value cut short"


def test_an_undecodable_command_gets_error_json():
    code, raw = skel.dispatch(FakePlugin(), {**GOOD_ENV, "CNI_COMMAND": "AD\udcff"}, json.dumps(CONF).encode())
    out = json.loads(raw.decode("utf-8"))  # valid UTF-8 and valid JSON
    assert_error(code, out, errors.INVALID_ENVIRONMENT, "unknown CNI_COMMAND", "AD\\udcff")


@pytest.mark.parametrize("command", ["add", "FOO", "VERSIONS"])
def test_unknown_command(command):
    code, out, plugin = dispatch({"CNI_COMMAND": command})
    assert_error(code, out, errors.INVALID_ENVIRONMENT, "unknown CNI_COMMAND", repr(command))
    assert not plugin.calls


# ---- 6 and 7: the config --------------------------------------------------------------


@pytest.mark.parametrize("stdin", [
    b"", b"{", b'{"name": "x",}', b"\xff\xfe", b"[]", b'"net"', b"null", b"42",
    b'{"name": "x", "mtu": NaN}', b'{"name": "x", "mtu": 1e999}', b'{"name": "\\ud800"}', b"\xef\xbb\xbf{}",
    b'{"name": "x"} {}', b'{"name": ' * 100_000,
])
def test_undecodable_config(stdin):
    code, out, plugin = dispatch(conf=stdin)
    assert_error(code, out, errors.DECODE_FAILURE, "failed to decode network config")
    assert out["cniVersion"] == "1.1.0" and not plugin.calls


@pytest.mark.parametrize("name", [None, "", "a/b", "..", ".", "-net", "net 1", 7])
def test_bad_network_name(name):
    conf = {k: v for k, v in CONF.items() if k != "name"}
    if name is not None:
        conf["name"] = name
    code, out, plugin = dispatch(conf=conf)
    assert_error(code, out, errors.INVALID_CONFIG, "network name")
    assert not plugin.calls


# ---- plugin errors --------------------------------------------------------------------


def test_plugin_error_is_reported_in_the_configs_version():
    failing = FakePlugin(fail=errors.CNIError(errors.TRY_AGAIN_LATER, "busy", "try later"))
    code, out, _ = dispatch(conf={**CONF, "cniVersion": "0.4.0"}, plugin=failing)
    assert (code, out) == (1, {"cniVersion": "0.4.0", "code": 11, "msg": "busy", "details": "try later"})


def test_unexpected_exception_is_error_999_without_traceback(capsys):
    failing = FakePlugin(fail=KeyError("ranges"))
    code, raw = skel.dispatch(failing, GOOD_ENV, json.dumps(CONF).encode())
    out = json.loads(raw)
    assert code == 1
    assert out == {"cniVersion": "1.1.0", "code": 999, "msg": "internal error: KeyError", "details": "'ranges'"}
    assert b"Traceback" not in raw and b"test_skel.py" not in raw
    err = capsys.readouterr().err
    assert "KeyError" in err and "test_skel.py" in err, "the log names where it failed"


def test_an_error_without_details_still_has_a_string_there():
    """An OSError's strerror is None for some errors; the spec's details is a string."""
    code, out, _ = dispatch(plugin=FakePlugin(fail=errors.CNIError(errors.IO_FAILURE, "cannot read", None)))
    assert_error(code, out, errors.IO_FAILURE, "cannot read")
    assert out["details"] == ""


def test_a_malformed_prev_result_is_set_aside_where_it_may_be(capsys):
    """DEL takes prevResult as a hint: prev_result() refuses what prev_result_if_usable()
    sets aside, saying so on stderr."""
    conf = {**CONF, "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": 7}]}}
    _, _, plugin = dispatch({"CNI_COMMAND": "DEL"}, conf=conf)
    (cmd_args,) = plugin.calls
    with pytest.raises(errors.CNIError) as caught:
        cmd_args.prev_result()
    assert caught.value.code == errors.DECODE_FAILURE
    assert cmd_args.prev_result_if_usable() is None
    assert "DEL: failed to decode prevResult" in capsys.readouterr().err
    _, _, plugin = dispatch({"CNI_COMMAND": "DEL"}, conf={**CONF, "prevResult": {"cniVersion": "1.1.0"}})
    assert plugin.calls[0].prev_result_if_usable() == {"cniVersion": "1.1.0"}
