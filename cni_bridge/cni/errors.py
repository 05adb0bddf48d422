"""The one error type that crosses the plugin boundary, and the spec's error codes."""

# Error codes from the CNI spec (SPEC.md, "Error"); 0-99 are reserved for the spec.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
# Not in the spec's table; the reference plugins use it for errors with no better code.
INTERNAL = 999


class CNIError(Exception):
    """An error the runtime sees as the spec's error JSON.

    `msg` is short and names what failed; `details` carries the cause (an errno text, the
    offending value). Raise it anywhere; the entry point prints it and exits 1.
    """

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details or ""  # an OSError's strerror, say, can be None

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_dict(self, cni_version: str) -> dict:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}
