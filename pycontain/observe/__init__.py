"""Observability: the audit log, the node state that the state API, `top`,
`status` and the Prometheus collector read, and the human-readable report.

It may import `core` only. It reports what the wiring (`app`) feeds it and
never acts on agents.
"""
