"""The kinds of object clusterd writes, one module each; adding a kind = a module and a line below.

See docs/architecture.md, "Adding a target". The order matters where two
targets share a kind of work: holders are written in this order.
"""

from __future__ import annotations

from clusterd.targets import (
    bgp_advertisement,
    calico_pool,
    cidr_group,
    cilium_pool,
    metallb_pool,
    network_policy,
    services_ha,
)
from clusterd.targets.base import Rule, Target

TARGETS: tuple[Target, ...] = (
    cilium_pool.TARGET,
    cidr_group.TARGET,
    metallb_pool.TARGET,
    calico_pool.TARGET,
    bgp_advertisement.TARGET,
    services_ha.TARGET,
    network_policy.TARGET,
)

OWN_RULES: tuple[Rule, ...] = (
    Rule("dynamic-prefix.io", "dynamicprefixes", ("list", "watch")),  # the cache; never GET one by one
    Rule("dynamic-prefix.io", "dynamicprefixes/status", ("update",)),  # PUT at the planned resourceVersion
    Rule("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),  # which versions are served
    Rule("apiregistration.k8s.io", "apiservices", ("list", "watch")),  # Calico's API server, when it runs
    Rule("events.k8s.io", "events", ("create", "patch")),  # Events; a repeat is patched into its series
)
"""What clusterd needs beyond its targets (the Lease's Role is separate, namespaced)."""


def by_kind(kind: str) -> Target:
    return next(t for t in TARGETS if t.kind == kind)


def rules() -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every grant clusterd needs cluster-wide: the chart's ClusterRole."""
    return {(r.group, r.resource, v) for r in OWN_RULES + tuple(x for t in TARGETS for x in t.rules)
            for v in r.verbs}  # fmt: skip
