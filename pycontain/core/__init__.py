"""The pure core: policy, events, engine, decisions, text, errors, and the pure
halves of the kernel tables.

Events, samples and the time go in; decisions and map contents come out. It
may import only the standard library, PyYAML and itself: no bcc, pynvml,
pyroute2, no other pycontain layer, no file or process I/O beyond reading a
policy file. It is tested as a normal user. (Contract: pyproject.toml,
[tool.importlinter].)
"""
