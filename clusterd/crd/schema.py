"""The CustomResourceDefinition made from the models: a structural schema plus CEL rules.

The CRD carries CEL rules the API server enforces before clusterd ever sees an
object: at least one acquisition source, range start <= end, suffixes confined
to host bits; range and subnet names are unique because the lists are maps
keyed by name.
"""

from __future__ import annotations

from typing import Any

from clusterd.crd.spec import GROUP, KIND, PLURAL, VERSION, DynamicPrefixSpec
from clusterd.crd.status import DynamicPrefixStatus


def _not_after(a: str, b: str) -> str:
    """CEL: IPv6 address ``a`` <= ``b``, with only the CIDR library (CEL cannot order IPs).

    a > b exactly when, at the first bit k where they differ, a has a 1: their
    first k-1 bits agree (b is in a's /(k-1)), b is not in a's /k, and a's /k
    block does not start where its /(k-1) block starts.
    """
    # Prefix lengths come from a list of string literals indexed by k: string(int)
    # and nested list literals have no size bound for the API server's cost
    # estimator, and it refuses rules it cannot bound.
    lengths = "[" + ", ".join(f"'/{k}'" for k in range(129)) + "]"
    ks = "[" + ", ".join(str(k) for k in range(1, 129)) + "]"
    shorter, longer = f"cidr({a} + {lengths}[k - 1])", f"cidr({a} + {lengths}[k])"
    differs_with_a_one = (
        f"{shorter}.containsIP({b}) && !{longer}.containsIP({b})"
        f" && !{longer}.containsIP({shorter}.masked().ip())"
    )
    return f"!{ks}.exists(k, {differs_with_a_one})"


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """pydantic's JSON Schema -> a Kubernetes structural schema (no $ref, no nullable anyOf)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {schema} structurally")
        out.update(_structural(options[0], defs))
        if any(o.get("type") == "null" for o in schema["anyOf"]):
            out["nullable"] = True
    for key in ("type", "description", "minimum", "maximum", "minLength", "maxLength", "pattern",
                "minItems", "maxItems", "enum", "format"):  # fmt: skip
        if key in schema:
            out[key] = schema[key]
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if "default" in schema and schema["default"] is not None:
        out["default"] = schema["default"]
    if schema.get("type") == "object" and "properties" in schema:
        out["properties"] = {k: _structural(v, defs) for k, v in schema["properties"].items()}
        if schema.get("required"):
            out["required"] = sorted(schema["required"])
    if schema.get("type") == "array" and "items" in schema:
        out["items"] = _structural(schema["items"], defs)
    for k, v in schema.items():
        if k.startswith("x-kubernetes-"):
            out[k] = v
    return out


def _spec_schema() -> dict[str, Any]:
    raw = DynamicPrefixSpec.model_json_schema(by_alias=True)
    spec = _structural(raw, raw.get("$defs", {}))
    spec.pop("description", None)

    # A suffix fills host bits only: within the prefix length routerd's prefixes are filtered
    # to, else the requested delegation length, else ::/64 (SLAAC links; it fits any prefix).
    def lengths(first: int) -> str:
        return "[" + ", ".join(f"'::/{n}'" for n in range(first, 65)) + "]"

    host_part = (
        "cidr(has(self.acquisition.routerd) && has(self.acquisition.routerd.prefixLength)"
        f" ? {lengths(1)}[self.acquisition.routerd.prefixLength - 1]"
        " : has(self.acquisition.dhcpv6pd) && has(self.acquisition.dhcpv6pd.requestedPrefixLength)"
        f" ? {lengths(48)}[self.acquisition.dhcpv6pd.requestedPrefixLength - 48]"
        " : '::/64')"
    )

    def within(x: str) -> str:
        return f"{host_part}.containsIP({x})"

    spec["x-kubernetes-validations"] = [
        {
            "rule": "has(self.acquisition.routerAdvertisement) || has(self.acquisition.dhcpv6pd)"
            " || has(self.acquisition.routerd)",
            "message": "set at least one acquisition source: routerAdvertisement, dhcpv6pd or routerd",
        },
        {
            "rule": "!has(self.addressRanges) || self.addressRanges.all(r, !isIP(r.start) || !isIP(r.end)"
            f" || ({within('r.start')} && {within('r.end')}))",
            "message": "address range suffixes must only set host bits (within ::/64, or within"
            " routerd.prefixLength or dhcpv6pd.requestedPrefixLength when set)",
        },
    ]
    ranges = spec["properties"]["addressRanges"]
    ranges["x-kubernetes-list-type"] = "map"
    ranges["x-kubernetes-list-map-keys"] = ["name"]
    ranges["items"]["x-kubernetes-validations"] = [
        {
            "rule": "isIP(self.start) && ip(self.start).family() == 6",
            "message": "start must be an IPv6 suffix",
        },
        {"rule": "isIP(self.end) && ip(self.end).family() == 6", "message": "end must be an IPv6 suffix"},
        {
            "rule": "!isIP(self.start) || !isIP(self.end) || ip(self.start).family() != 6"
            " || ip(self.end).family() != 6 || " + _not_after("self.start", "self.end"),
            "message": "start must not be after end",
        },
    ]
    subnets = spec["properties"]["subnets"]
    subnets["x-kubernetes-list-type"] = "map"
    subnets["x-kubernetes-list-map-keys"] = ["name"]
    return spec


def _printer_columns() -> list[dict[str, Any]]:
    """``kubectl get dp``: the prefix, and whether anything is wrong and why (RAListenerUnavailable, ...)."""

    def condition(type_: str, field: str) -> str:
        return f'.status.conditions[?(@.type=="{type_}")].{field}'

    return [
        {"name": "Prefix", "type": "string", "jsonPath": ".status.currentPrefix"},
        {"name": "Source", "type": "string", "jsonPath": ".status.prefixSource"},
        {"name": "Pools", "type": "string", "jsonPath": condition("PoolsSynced", "status"),
         "description": "PoolsSynced: every pool and CIDR group that names this DynamicPrefix is in step."},
        {"name": "Degraded", "type": "string", "jsonPath": condition("Degraded", "status")},
        {"name": "Reason", "type": "string", "jsonPath": condition("Degraded", "reason"),
         "description": "Why it is degraded (AsExpected when it is not)."},
        {"name": "Message", "type": "string", "jsonPath": condition("Degraded", "message"), "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]  # fmt: skip


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition, ready to apply."""
    status_raw = DynamicPrefixStatus.model_json_schema(by_alias=True)
    status = _structural(status_raw, status_raw.get("$defs", {}))
    status.pop("description", None)
    conds = status["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "dynamicprefix",
                "shortNames": ["dp"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A dynamic IPv6 prefix and what the cluster derives from it.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(),
                                "status": status,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    import yaml

    class Plain(yaml.SafeDumper):
        """Writes a schema shared by two fields (SourceStatus) twice, not as a YAML alias."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    header = "# Generated by `clusterd crd` from clusterd/crd/; do not edit (a test fails on drift).\n"
    return header + yaml.dump(crd(), Dumper=Plain, sort_keys=False, width=120)
