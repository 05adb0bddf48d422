"""The portmap rig's fixtures for every test file here (the rig itself is portmap_rig.py)."""

from portmap_rig import bin_dir, make_rig, netns_prefix, reference_dir, rig  # noqa: F401  (fixtures, registered by import)
