"""JSON schemas for validating the rendered manifests offline, in kubeconform's file layout.

Two sources, both prepared into a cache directory (never the clone):

- Kubernetes' own objects: the strict schemas the ``kubernetes-validate`` wheel (PyPI)
  bundles per Kubernetes version (``kubernetes-json-schema/v<version>-local-strict``). Their
  ``$ref``s point at ``https://kubernetes.io/api/_definitions.json``; :func:`core` rewrites
  them to the ``_definitions.json`` beside each file, so nothing is fetched while validating.
- Custom resources: each CRD's ``openAPIV3Schema`` (Strimzi, CloudNativePG) converted the
  way kubeconform's ``openapi2jsonschema.py`` does it (:func:`crd_to_jsonschema`): every
  object with ``properties`` refuses other fields unless the CRD says
  ``x-kubernetes-preserve-unknown-fields``; ``int-or-string`` becomes string-or-integer;
  ``nullable`` admits null. Written as ``<group>/<kind>_<version>.json``.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

WHEEL_SCHEMA_DIR = "kubernetes_validate/kubernetes-json-schema"
_REMOTE_DEFS = "/api/_definitions.json#"


class SchemaError(Exception):
    """A schema source is missing or not what was expected."""


def core(wheel: Path, k8s_version: str, out: Path) -> Path:
    """Write the strict schemas of ``k8s_version`` (e.g. ``1.34.0``) from the wheel into ``out``,
    each self-contained: the definitions it reaches are copied into its own ``$defs`` (one
    shared 1.2 MB definitions file made kubeconform parse it again for every kind)."""
    prefix = f"{WHEEL_SCHEMA_DIR}/v{k8s_version}-local-strict/"
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".json")]
        if f"{prefix}_definitions.json" not in names:
            raise SchemaError(f"{wheel.name} has no schemas for Kubernetes v{k8s_version}")
        defs: dict[str, Any] = json.loads(zf.read(f"{prefix}_definitions.json"))["$defs"]
        defs = json.loads(json.dumps(defs).replace(f'"{_REMOTE_DEFS}', '"#'))
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if name.endswith("/_definitions.json"):
                continue
            schema = json.loads(json.dumps(json.loads(zf.read(name))).replace(f'"{_REMOTE_DEFS}', '"#'))
            schema.pop("$id", None)
            schema["$defs"] = {key: defs[key] for key in sorted(_reachable(schema, defs))}
            (out / name.removeprefix(prefix)).write_text(json.dumps(schema))
    return out


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            yield ref.removeprefix("#/$defs/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _reachable(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = list(_refs(schema))
    while todo:
        key = todo.pop()
        if key not in seen and key in defs:
            seen.add(key)
            todo.extend(_refs(defs[key]))
    return seen


def _additional_properties(node: Any) -> None:
    if isinstance(node, dict):
        preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
        if "properties" in node and "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
        for value in node.values():
            _additional_properties(value)
    elif isinstance(node, list):
        for value in node:
            _additional_properties(value)


def _int_or_string(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("x-kubernetes-int-or-string") is True or node.get("format") == "int-or-string":
            rest = {k: v for k, v in node.items() if k not in ("type", "format", "x-kubernetes-int-or-string")}
            return {**rest, "oneOf": [{"type": "string"}, {"type": "integer"}]}
        return {k: _int_or_string(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_int_or_string(v) for v in node]
    return node


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items()}
        if out.pop("nullable", False) is True and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


def crd_to_jsonschema(openapi: dict[str, Any]) -> dict[str, Any]:
    """One CRD version's ``openAPIV3Schema`` as a strict JSON schema."""
    schema = _nullable(_int_or_string(json.loads(json.dumps(openapi))))
    _additional_properties(schema)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return dict(schema)


def crd_documents(files: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def crds(files: Iterable[Path], out: Path) -> list[str]:
    """Convert every served version of every CRD in ``files``; returns ``group/kind_version`` names."""
    written: list[str] = []
    for crd in crd_documents(files):
        spec = crd["spec"]
        group, kind = spec["group"], spec["names"]["kind"].lower()
        for version in spec.get("versions", []):
            openapi = version.get("schema", {}).get("openAPIV3Schema")
            if not version.get("served", True) or openapi is None:
                continue
            target = out / group / f"{kind}_{version['name']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(crd_to_jsonschema(openapi)))
            written.append(f"{group}/{kind}_{version['name']}")
    if not written:
        raise SchemaError("no CustomResourceDefinition with an openAPIV3Schema in the CRD files")
    return sorted(written)
