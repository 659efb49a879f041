"""Address ranges the policy names by a keyword (network.deny_internal,
network.deny_metadata): shared by the policy reader and the kernel-table
compiler without either importing the other."""

from __future__ import annotations

INTERNAL_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
                   "fc00::/7", "fe80::/10")
METADATA_RANGES = ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32", "169.254.170.2/32")
