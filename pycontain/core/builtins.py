"""Built-in policies (package data): `default` (the ROME defaults) and `strict`.

The YAML sources live in `core/policies/`. Parsing them is core/policy.py's
job (`builtin_policy`); this module only finds and reads them, so it imports
nothing of the policy code and no cycle exists between the two.

    >>> from pycontain.core.builtins import names
    >>> names()
    ('default', 'strict')
"""

from __future__ import annotations

from importlib import resources

from .errors import PolicyError

NAMES = ("default", "strict")


def names() -> tuple[str, ...]:
    return NAMES


def text(name: str) -> str:
    """The YAML source of a built-in policy (for `pycontain policy show` or as a template)."""
    if name not in NAMES:
        raise PolicyError(f"<builtin:{name}>", None, "", f"no built-in policy {name!r}",
                          "built-ins: " + ", ".join(NAMES))
    return resources.files(__package__).joinpath("policies", f"{name}.yaml").read_text(encoding="utf-8")

