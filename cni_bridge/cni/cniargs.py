"""CNI_ARGS: `K=V;K2=V2`, parsed as the reference's types.LoadArgs does.

Keys are case-sensitive; a key this suite does not know is an error unless
IgnoreUnknown is true (kubelet and containerd always send IgnoreUnknown=1 with their
K8S_POD_* keys).
"""

from cni_bridge.cni.errors import CNIError, INVALID_ENVIRONMENT

# The keys our plugins read: IP for host-local, MAC for bridge. Both plugins accept both,
# because the bridge passes its environment on to IPAM unchanged.
KNOWN_KEYS = frozenset({"IgnoreUnknown", "IP", "MAC"})
# The reference's UnmarshallableBool: "1", "true", "0", "false", in any letter case.
_TRUE = ("1", "true")
_FALSE = ("0", "false")


def parse_cni_args(raw: str) -> dict[str, str]:
    """Return the known keys of CNI_ARGS as a dict; raise CNIError(4) on malformed input."""
    pairs: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue  # tolerate "A=1;" and ";;"
        parts = item.split("=")
        if len(parts) != 2:
            raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_ARGS", f"pair {item!r} is not KEY=VALUE")
        pairs[parts[0]] = parts[1]

    ignore_unknown = pairs.get("IgnoreUnknown", "false").lower()
    if ignore_unknown not in _TRUE + _FALSE:
        raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_ARGS", f"IgnoreUnknown={pairs['IgnoreUnknown']!r} is not a boolean")
    unknown = [key for key in pairs if key not in KNOWN_KEYS]
    if unknown and ignore_unknown not in _TRUE:
        raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_ARGS", f"unknown keys {unknown} (set IgnoreUnknown=1 to allow)")
    return {key: value for key, value in pairs.items() if key in KNOWN_KEYS}
