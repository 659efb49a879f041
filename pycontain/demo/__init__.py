"""The ROME demo (a simulated rogue agent and the harness that contains it) and
the test rig it shares with the kernel tests: `testhost`, a far host in a
network namespace.

A top layer beside `cli`: it may import everything and nothing imports it.
"""
