"""DNS names of network rules, resolved through an injected lookup."""

from __future__ import annotations

from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.core.resolve import Resolver, hosts_in_policy


class FakeDns:
    def __init__(self, table):
        self.table = table
        self.calls = 0

    def __call__(self, host):
        self.calls += 1
        v = self.table.get(host)
        if v is None:
            raise OSError("no such host")
        return list(v)


def test_hosts_in_policy():
    assert hosts_in_policy(builtin_policy("strict")) == ["@nameservers", "files.pythonhosted.org",
                                                         "huggingface.co", "pypi.org"]
    assert hosts_in_policy(load_policy_text("name: x\n")) == []
    p = load_policy_text("network:\n  deny: [{host: Bad.Example.}]\n  allow: [{host: pypi.org}]\n")
    assert hosts_in_policy(p) == ["bad.example", "pypi.org"]


def test_refresh_due_and_change_detection():
    dns = FakeDns({"a.test": ["198.51.100.2", "198.51.100.1", "198.51.100.1"], "b.test": ["2001:db8::1"]})
    r = Resolver(["a.test", "b.test"], dns, interval_s=60)
    assert r.due(0)
    assert r.refresh(0) is True
    assert r.addresses == {"a.test": ["198.51.100.1", "198.51.100.2"], "b.test": ["2001:db8::1"]}
    assert not r.due(59) and r.due(60)
    assert r.refresh(60) is False                        # same answers: nothing to rewrite
    dns.table["a.test"] = ["198.51.100.3"]
    assert r.refresh(120) is True and r.addresses["a.test"] == ["198.51.100.3"]


def test_failure_keeps_last_known_addresses():
    dns = FakeDns({"a.test": ["198.51.100.1"]})
    r = Resolver(["a.test", "gone.test"], dns, interval_s=1)
    r.refresh(0)
    del dns.table["a.test"]
    assert r.refresh(1) is False and r.addresses["a.test"] == ["198.51.100.1"]
    assert r.addresses["gone.test"] == []


def test_no_hosts_never_due():
    r = Resolver([], FakeDns({}), interval_s=1)
    assert not r.due(100)
