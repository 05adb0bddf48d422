"""Reading pyroute2's message classes, the oracle of our codec."""


def pyroute2_ids(nla_class) -> dict[str, int]:
    """Attribute name -> type id in a pyroute2 nla class (its nla_map lists them by position,
    or as (id, name, kind))."""
    ids = {}
    for position, entry in enumerate(nla_class.nla_map):
        if isinstance(entry[0], int):
            ids.setdefault(entry[1], entry[0])
        else:
            ids[entry[0]] = position
    return ids


def ids_agree(ours, theirs) -> bool:
    """Our attribute table names the same ids as pyroute2's class."""
    pyroute2 = pyroute2_ids(theirs)
    return {name: entry[1] for name, entry in ours.by_name.items()} == {name: pyroute2[name] for name in ours.by_name}
