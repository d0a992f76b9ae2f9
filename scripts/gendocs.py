"""Generate the reference documents that must never drift from the code.

    python scripts/gendocs.py          # rewrite them
    python scripts/gendocs.py --check  # exit 1 if any is stale (the tests run this)

- docs/wire-schema.json: the JSON Schema of the wire message (routerd/core/wire.py)
- docs/configuration.md: routerd's and clusterd's configuration keys, from the pydantic models
- manifests/crds/ and the chart's crds/: the DynamicPrefix CRD (clusterd/crd/)
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (optional)" if type(None) in args else ""
        )
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}" if args else "list"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed)" if not isinstance(field.default_factory, type) else "(section defaults)"
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return "unset"
    if isinstance(field.default, bool):
        return "`true`" if field.default else "`false`"
    if isinstance(field.default, tuple) and not field.default:
        return "`[]`"
    return f"`{field.default}`"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for a in (annotation, *typing.get_args(annotation)):
        for b in (a, *typing.get_args(a)):
            if isinstance(b, type) and issubclass(b, BaseModel):
                return b
    return None


def model_reference(model: type[BaseModel], heading: str, level: int = 3, style: str = "toml") -> list[str]:
    """A markdown table of ``model``'s keys, then one per nested section."""
    lines = [f"{'#' * level} {heading}", ""]
    if model.__doc__:
        lines += [model.__doc__.strip().splitlines()[0], ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = _section_model(field.annotation)
        if sub is not None:
            is_list = typing.get_origin(field.annotation) in (tuple, list)
            if style == "toml":
                title = f"[[{key}]]" if is_list else f"[{key}]"
            else:
                prefix = "" if heading == "top level" else heading.strip("`").rstrip(":") + "."
                title = f"`{prefix}{key}:`"
            nested.append((title, sub))
            lines.append(f"| `{key}` | {'list of tables' if is_list else 'table'} | | see {title} below |")
            continue
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
    lines.append("")
    for title, sub in nested:
        lines += model_reference(sub, title, level + 1, style)
    return lines


def configuration_md() -> str:
    from routerd.config import Config as RouterdConfig

    parts = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `python scripts/gendocs.py`; a test fails when it is stale.",
        "",
        "## routerd (`/etc/routerd/routerd.toml`)",
        "",
        "TOML. Every key is optional: with no file routerd watches the default-route interface and",
        "prints JSON lines. Unknown keys are errors (a typo never passes silently). On OpenWrt the same",
        "keys live in UCI form in /etc/config/routerd: `config routerd` holds the top-level keys,",
        "`config interface` and `config webhook` sections repeat, `config mqtt` (and tracker, publish,",
        "stdout) are the tables, `list` gives list values, and `option enabled '0'` turns a section off.",
        "`routerd check-config --config FILE` validates a file without starting anything.",
        "",
        *model_reference(RouterdConfig, "top level"),
    ]
    try:
        from clusterd.config import Config as ClusterdConfig
    except ImportError:
        pass
    else:
        parts += [
            "## clusterd",
            "",
            "A YAML file (`clusterd --config`; the Helm chart renders it from its values). Unknown keys are errors.",
            "A complete example is in [clusterd.md](clusterd.md#running-clusterd-outside-the-chart);",
            "`clusterd check-config --config FILE` validates a file without starting anything.",
            "",
            *model_reference(ClusterdConfig, "top level", style="yaml"),
        ]
    return "\n".join(parts).rstrip() + "\n"


def wire_schema_json() -> str:
    from routerd.core.wire import json_schema

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def dynamicprefix_crd() -> str:
    from clusterd.crd import crd_yaml

    return crd_yaml()


TARGETS = {
    ROOT / "docs" / "wire-schema.json": wire_schema_json,
    ROOT / "docs" / "configuration.md": configuration_md,
    ROOT / "manifests" / "crds" / "dynamic-prefix.io_dynamicprefixes.yaml": dynamicprefix_crd,
    ROOT / "manifests/charts/dynamic-prefix/crds/dynamic-prefix.io_dynamicprefixes.yaml": dynamicprefix_crd,
}


def main(argv: list[str]) -> int:
    stale = []
    for path, render in TARGETS.items():
        text = render()
        if path.exists() and path.read_text() == text:
            continue
        if "--check" in argv:
            stale.append(path.relative_to(ROOT))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale: {', '.join(map(str, stale))}; run: python scripts/gendocs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
