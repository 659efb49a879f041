"""pycontain: contain autonomous AI agents at the kernel level."""

__version__ = "0.1.0"
