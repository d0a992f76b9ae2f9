"""The DynamicPrefix resource (dynamic-prefix.io/v1alpha1): pydantic models and the CRD made from them.

A superset of the Go dynamic-prefix-operator's schema, so its manifests apply
unchanged. ``manifests/crds/dynamic-prefix.io_dynamicprefixes.yaml`` is
generated from these models (``clusterd crd``); a test fails when it drifts.
``spec`` holds what the user asks for, ``status`` what clusterd derives, and
``schema`` turns both into the CRD with the CEL rules the API server enforces.
"""

from clusterd.crd.schema import crd, crd_yaml
from clusterd.crd.spec import (
    BGP,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Acquisition,
    AddressRange,
    DHCPv6PDSource,
    DynamicPrefixSpec,
    RouterAdvertisementSource,
    RouterdSource,
    Subnet,
    Transition,
)
from clusterd.crd.status import (
    MAX_PRUNED,
    Condition,
    DynamicPrefixStatus,
    HistoryEntry,
    RangeStatus,
    SourceStatus,
    SubnetStatus,
)

__all__ = [
    "BGP",
    "GROUP",
    "KIND",
    "MAX_PRUNED",
    "PLURAL",
    "VERSION",
    "Acquisition",
    "AddressRange",
    "Condition",
    "DHCPv6PDSource",
    "DynamicPrefixSpec",
    "DynamicPrefixStatus",
    "HistoryEntry",
    "RangeStatus",
    "RouterAdvertisementSource",
    "RouterdSource",
    "SourceStatus",
    "Subnet",
    "SubnetStatus",
    "Transition",
    "crd",
    "crd_yaml",
]
