"""The loopback rig's fixtures for every test file here (the rig itself is loopback_rig.py)."""

from loopback_rig import netns_prefix, node, reference_loopback  # noqa: F401  (fixtures, registered by import)
