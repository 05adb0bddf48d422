"""IP addresses as (family, integer) pairs: the arithmetic host-local needs.

The stdlib ipaddress module would do, but it costs ~4 ms to import on every exec; parsing
and formatting go through the C socket module's inet_pton/inet_ntop instead, which also
gives the canonical text form (RFC 5952 for IPv6) that lease file names use.
"""

from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton

BITS = {4: 32, 6: 128}


class Network:
    """A subnet: family 4 or 6, the network address as an int, and the prefix length."""

    __slots__ = ("family", "address", "prefix")

    def __init__(self, family: int, address: int, prefix: int):
        self.family = family
        self.address = address
        self.prefix = prefix

    @property
    def size(self) -> int:
        return 1 << (BITS[self.family] - self.prefix)

    @property
    def last(self) -> int:
        return self.address + self.size - 1

    def __contains__(self, ip: tuple[int, int]) -> bool:
        family, value = ip
        return family == self.family and self.address <= value <= self.last

    def overlaps(self, other: "Network") -> bool:
        return self.family == other.family and self.address <= other.last and other.address <= self.last

    def __eq__(self, other) -> bool:
        return isinstance(other, Network) and (self.family, self.address, self.prefix) == (
            other.family, other.address, other.prefix)

    def __str__(self) -> str:
        return f"{format_ip(self.family, self.address)}/{self.prefix}"


def parse_ip(text: str) -> tuple[int, int]:
    """'10.0.0.1' -> (4, 167772161); raises ValueError."""
    family = 6 if ":" in text else 4
    try:
        packed = inet_pton(AF_INET6 if family == 6 else AF_INET, text)
    except (OSError, TypeError):
        raise ValueError(f"invalid IP address {text!r}") from None
    return family, int.from_bytes(packed, "big")


def format_ip(family: int, value: int) -> str:
    if family == 6:
        return inet_ntop(AF_INET6, value.to_bytes(16, "big"))
    return inet_ntop(AF_INET, value.to_bytes(4, "big"))


def parse_cidr(text: str) -> tuple[tuple[int, int], int]:
    """'10.0.0.5/24' -> ((4, address), 24); raises ValueError."""
    address, slash, prefix_text = text.partition("/")
    try:
        family, value = parse_ip(address)
    except ValueError:
        raise ValueError(f"invalid CIDR {text!r}") from None
    # isdigit() alone would take "²" and "٢٤" (and int() reads the latter as 24).
    if not slash or not (prefix_text.isascii() and prefix_text.isdigit()) or int(prefix_text) > BITS[family]:
        raise ValueError(f"invalid CIDR {text!r}")
    return (family, value), int(prefix_text)


def parse_network(text: str) -> Network:
    """A subnet in CIDR form; host bits must be zero, as the reference insists."""
    (family, value), prefix = parse_cidr(text)
    host_bits = (1 << (BITS[family] - prefix)) - 1
    if value & host_bits:
        network = format_ip(family, value & ~host_bits)
        raise ValueError(f"network {text!r} has host bits set; for a /{prefix} the network address is {network}")
    return Network(family, value, prefix)
