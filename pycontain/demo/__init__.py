"""The ROME demo: a simulated rogue agent and the harness that contains it."""
