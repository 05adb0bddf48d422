"""Validation of the names a runtime hands us, as libcni validates them.

Written without `re`: importing it costs several milliseconds on every exec.
"""

from cni_bridge.cni.errors import CNIError, INVALID_CONFIG, INVALID_ENVIRONMENT

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")
MAX_IFNAME_LENGTH = 15  # IFNAMSIZ - 1


def is_valid_name(name: str) -> bool:
    """True for ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$, the rule for network names and container ids.

    The rule also keeps a name from escaping a directory: no '/', and no '.' or '..'.
    """
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name)


def check_network_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise CNIError(INVALID_CONFIG, "missing network name")
    if not is_valid_name(name):
        raise CNIError(INVALID_CONFIG, "invalid network name", f"{name!r} must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")
    return name


def check_container_id(container_id: str) -> str:
    if not is_valid_name(container_id):
        raise CNIError(
            INVALID_ENVIRONMENT,
            "invalid characters in CNI_CONTAINERID",
            f"{container_id!r} must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$",
        )
    return container_id


def check_interface_name(ifname: str) -> str:
    problem = None
    if not ifname:
        problem = "is empty"
    elif len(ifname.encode("utf-8", "surrogateescape")) > MAX_IFNAME_LENGTH:
        # The kernel's limit is in bytes, as libcni's len() counts them.
        problem = f"is longer than {MAX_IFNAME_LENGTH} bytes"
    elif ifname in (".", ".."):
        problem = "is '.' or '..'"
    elif any(c in "/:" or c.isspace() for c in ifname):
        problem = "contains '/', ':' or white space"
    if problem:
        raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_IFNAME", f"interface name {ifname!r} {problem}")
    return ifname
