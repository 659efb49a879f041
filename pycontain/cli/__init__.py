"""The `pycontain` command line: argument parsing, one `error:` line per
failure, and the commands (`run`, `daemon`, `trace`, `doctor`, `replay`,
`policy`, `top`...).

The top layer: it may import everything. Commands import their heavy edges
(bcc, pynvml, pyroute2) lazily so that `pycontain policy check` stays light.
"""

from .main import main

__all__ = ["main"]
