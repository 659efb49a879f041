"""One error family for the whole project.

Every error a user can cause or meet carries a one-line message, an optional
hint and the process exit code the CLI should use. The CLI prints
``error: <message>`` and ``hint: <hint>``; with -v it adds the traceback.
"""

from __future__ import annotations


class PycontainError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PycontainError):
    """Bad command-line usage."""

    exit_code = 2


class PolicyError(PycontainError):
    """A policy file is unreadable or invalid.

    The message always names file, line and key path:
    ``policy.yaml:12: network.deny[1].cidr: '10.0.0.0/33' is not a valid CIDR``
    """

    exit_code = 2

    def __init__(self, file: str, line: int | None, key: str, problem: str, hint: str | None = None):
        self.file = file
        self.line = line
        self.key = key
        self.problem = problem
        where = f"{file}:{line}" if line else f"{file}"
        super().__init__(f"{where}: {key or '<top>'}: {problem}", hint)
        self.more: list[PolicyError] = []      # further errors in the same policy, in file order

    def all(self) -> list[PolicyError]:
        return [self, *self.more]

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "key": self.key, "problem": self.problem,
                "hint": self.hint, "message": self.message}


class EnvironmentProblem(PycontainError):
    """The host lacks something pycontain needs (root, BPF, cgroups, NVML...)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = "run `pycontain doctor` for a full host check"):
        super().__init__(message, hint)


class CommandNotFound(PycontainError):
    exit_code = 127


class GpuUnavailable(EnvironmentProblem):
    """NVML is missing or not usable while the policy requires GPU enforcement."""
