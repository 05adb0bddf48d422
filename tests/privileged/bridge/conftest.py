"""The bridge rig's fixtures for every test file here (the rig itself is bridge_rig.py)."""

from bridge_rig import bin_dir, make_rig, netns_prefix, rig  # noqa: F401  (fixtures, registered by import)
