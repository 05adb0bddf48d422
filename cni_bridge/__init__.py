"""CNI plugins in Python: the protocol layer, the bridge plugin and its kernel code.

This package's __init__ imports nothing: every plugin exec pays for what it imports.
"""
