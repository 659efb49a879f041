"""The wiring: one session (probes, actuator, GPU sampler, audit, state API,
metrics server) shared by `pycontain run`, `pycontain daemon` and
`pycontain trace`.

It may import every layer below it (`observe`, `gpu`, `kernel`, `actuate`,
`core`) and is imported only by `cli` and `demo`.
"""
