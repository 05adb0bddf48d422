"""Address allocation: round robin through a range set, as the reference host-local does,
so that a node switching between the two plugins keeps the same order."""

from cni_bridge.cni.errors import CNIError, INTERNAL
from cni_bridge.cni.addr import format_ip, parse_ip
from ipam.config import Range, range_set_str
from ipam.store import Store


def candidates(range_set: list[Range], last_reserved: tuple[int, int] | None):
    """Yield (range, address) for every address of the set once, starting after the last
    reserved address (or at the first range's start) and wrapping around."""
    segments = [(r, r.start, r.end) for r in range_set]
    for i, r in enumerate(range_set):
        if last_reserved is not None and last_reserved in r:
            after, rest = range_set[i + 1:], range_set[:i]
            segments = [(r, last_reserved[1] + 1, r.end)]
            segments += [(other, other.start, other.end) for other in after + rest]
            segments.append((r, r.start, last_reserved[1]))
            break
    for r, first, last in segments:
        for address in range(first, last + 1):
            if address != r.gateway:
                yield r, address


def allocate(
    store: Store, range_set: list[Range], index: int, container_id: str, ifname: str,
    requested: tuple[int, int] | None,
) -> tuple[Range, int]:
    """Lease one address of range set `index` to (container id, ifname) and return it.

    The caller holds the store's lock.
    """
    for leased in store.leases_of(container_id, ifname):
        try:
            ip = parse_ip(leased)
        except ValueError:
            continue
        if any(ip in r for r in range_set):
            raise CNIError(
                INTERNAL,
                f"{leased} has been allocated to {container_id}, duplicate allocation is not allowed",
                f"range set {index} ({range_set_str(range_set)})",
            )

    if requested is not None:
        holder = next(r for r in range_set if requested in r)
        text = format_ip(*requested)
        if not store.reserve(container_id, ifname, text, index):
            raise CNIError(INTERNAL, f"requested IP address {text} is not available in range set {range_set_str(range_set)}")
        return holder, requested[1]

    last_text = store.last_reserved(index)
    try:
        last = parse_ip(last_text) if last_text else None
    except ValueError:
        last = None  # a damaged hint only costs the round robin its place
    for r, address in candidates(range_set, last):
        if store.reserve(container_id, ifname, format_ip(r.family, address), index):
            return r, address
    raise CNIError(INTERNAL, f"no IP addresses available in range set: {range_set_str(range_set)}")


def free_address_exists(store: Store, range_set: list[Range]) -> bool:
    leased = set(ip for ip, _, _ in store.leases())
    for r, address in candidates(range_set, None):
        if format_ip(r.family, address) not in leased:
            return True
    return False
