"""Validation of the names and values a runtime hands us, before anything acts on them.

Names follow libcni's rules. Every value of the environment must also be text we can
write back (lease files, nft comments, error JSON, logs): valid UTF-8 (Python hands the
undecodable bytes of os.environ over as lone surrogates, U+DC80-U+DCFF), without control
characters, and of a length the kernel or a file name can hold.

Written without `re`: importing it costs several milliseconds on every exec.
"""

from cni_bridge.cni.errors import CNIError, INVALID_CONFIG, INVALID_ENVIRONMENT

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")
_NAME_RULE = "^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
MAX_IFNAME_LENGTH = 15  # IFNAMSIZ - 1
# libcni sets no bound of its own, but names its result cache file after the id, and a
# file name holds NAME_MAX bytes: no libcni runtime can get a longer id past its ADD.
MAX_CONTAINER_ID_LENGTH = 255
MAX_PATH_LENGTH = 4095  # PATH_MAX, less its NUL
# kubelet sends about 300 bytes; exec limits one variable to 128 KiB.
MAX_CNI_ARGS_LENGTH = 16384
_SHOWN = 64  # characters of a refused value quoted in the error


def is_valid_name(name: str) -> bool:
    """True for ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$, the rule for network names and container ids.

    The rule also keeps a name from escaping a directory: no '/', and no '.' or '..'.
    """
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name)


def check_network_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise CNIError(INVALID_CONFIG, "missing network name")
    if not is_valid_name(name):
        raise CNIError(INVALID_CONFIG, "invalid network name", f"{shown(name)} must match {_NAME_RULE}")
    return name


def check_container_id(container_id: str) -> str:
    if not is_valid_name(container_id):
        raise CNIError(INVALID_ENVIRONMENT, "invalid characters in CNI_CONTAINERID",
                       f"{shown(container_id)} must match {_NAME_RULE}")
    if len(container_id) > MAX_CONTAINER_ID_LENGTH:  # ASCII only, so characters are bytes
        raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_CONTAINERID",
                       f"{shown(container_id)} is longer than {MAX_CONTAINER_ID_LENGTH} bytes ({len(container_id)})")
    return container_id


def check_interface_name(ifname: str) -> str:
    problem = interface_name_problem(ifname)
    if problem:
        raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_IFNAME", f"interface name {shown(ifname)} {problem}")
    return ifname


def interface_name_problem(name: str) -> str | None:
    """Why the kernel would refuse `name` for a link (its dev_valid_name), or None."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if any(c in "/:" or c.isspace() for c in name):
        return "contains '/', ':' or white space"
    return text_problem(name, MAX_IFNAME_LENGTH)  # the kernel's limit is in bytes


def check_environment_text(variable: str, value: str, max_length: int | None) -> str:
    """A value of the environment that only has to be clean text (of at most max_length bytes)."""
    problem = text_problem(value, max_length)
    if problem:
        raise CNIError(INVALID_ENVIRONMENT, f"invalid {variable}", f"{shown(value)} {problem}")
    return value


def check_cni_path(value: str) -> list[str]:
    """CNI_PATH split into its directories, each a path the kernel can take."""
    check_environment_text("CNI_PATH", value, None)
    directories = [entry for entry in value.split(":") if entry]
    for entry in directories:
        check_environment_text("CNI_PATH", entry, MAX_PATH_LENGTH)
    return directories


def text_problem(value: str, max_length: int | None) -> str | None:
    """What makes `value` unfit to be written anywhere, in words, or None: bytes that are
    not UTF-8, a control character, more than max_length bytes of UTF-8 (None: no bound)."""
    try:
        encoded = value.encode()
    except UnicodeEncodeError as err:
        bad = ord(value[err.start])
        byte = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"U+{bad:04X}"
        return f"is not valid UTF-8 ({byte} at character {err.start})"
    if not value.isprintable():  # one pass in C; False for more than control characters, so look closer
        for position, c in enumerate(value):
            if c < " " or "\x7f" <= c <= "\x9f":
                return f"holds a control character (U+{ord(c):04X} at character {position})"
    if max_length is not None and len(encoded) > max_length:
        return f"is longer than {max_length} bytes ({len(encoded)})"
    return None


def shown(value: str) -> str:
    """A value as an error quotes it: repr (escapes for what is not printable), cut short."""
    if len(value) > _SHOWN:
        return repr(value[:_SHOWN]) + f"... ({len(value)} characters)"
    return repr(value)
