"""Built-in policies (package data): `default` (the ROME defaults) and `strict`.

    >>> from pycontain.policies import load, names
    >>> load("default").name
    'default'
"""

from __future__ import annotations

from importlib import resources

NAMES = ("default", "strict")


def names() -> tuple[str, ...]:
    return NAMES


def text(name: str) -> str:
    """The YAML source of a built-in policy (for `pycontain policy show` or as a template)."""
    if name not in NAMES:
        from ..errors import PolicyError
        raise PolicyError(f"<builtin:{name}>", None, "", f"no built-in policy {name!r}",
                          "built-ins: " + ", ".join(NAMES))
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def load(name: str):
    """The built-in policy `name`, parsed and validated (a Policy)."""
    from ..core.policy import load_policy_text
    return load_policy_text(text(name), f"<builtin:{name}>")
