"""``python -m deploy.k8s.check`` (``make k8s-check``): render every kustomization with the real
kustomize and validate every rendered object offline with kubeconform, against Kubernetes'
strict schemas and the Strimzi / CloudNativePG CRDs' own ``openAPIV3Schema``.

Also checks that ``base/kafka/topics.yaml`` is what ``python -m deploy.k8s.topics`` generates
from the topic registry; that every pod template sets resource requests and limits, and
(long-running containers) liveness and readiness probes; and that every name an object uses
(Secrets and their keys, ConfigMaps, claims, Services, selectors) exists in the render
(``deploy/k8s/refs.py``).

The tools come from ``scripts/k8s.sh install`` (``make k8s-install``), cached under
``$ROOMLOG_CACHE/k8s``. The CRD YAML files named in ``crds/SOURCES.tsv`` are looked up in
``$ROOMLOG_K8S_CRDS``, then ``deploy/k8s/crds/``, then ``$ROOMLOG_CACHE/k8s/crds``, and must
match their sha256. Exit codes: 0 valid, 1 invalid, 2 usage or tools missing, 3 CRDs missing
(``--allow-missing-crds`` validates everything else and says what it skipped).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.k8s import refs, schemas, topics

HERE = Path(__file__).resolve().parent
TARGETS = ("overlays/dev", "overlays/prod", "examples/edge")
K8S_VERSION = "1.34.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


@dataclass(frozen=True)
class CrdSource:
    file: str
    project: str
    release: str
    path: str
    sha256: str
    kinds: tuple[str, ...]


def crd_sources(root: Path) -> list[CrdSource]:
    out = []
    for line in (root / "crds" / "SOURCES.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            file, project, release, path, sha, kinds = line.split("\t")
            out.append(CrdSource(file, project, release, path, sha, tuple(kinds.split(","))))
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("ROOMLOG_CACHE", Path.home() / ".cache" / "roomlog")) / "k8s"


def find_crds(root: Path) -> tuple[list[Path], list[CrdSource]]:
    """The CRD files found (sha256 checked) and the sources not found anywhere."""
    dirs = [Path(d) for d in [os.environ.get("ROOMLOG_K8S_CRDS", "")] if d] + [root / "crds", cache_dir() / "crds"]
    found, missing = [], []
    for src in crd_sources(root):
        for d in dirs:
            path = d / src.file
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != src.sha256:
                    raise SystemExit(f"k8s-check: {path} has sha256 {digest}, SOURCES.tsv pins {src.sha256}")
                found.append(path)
                break
        else:
            missing.append(src)
    return found, missing


def prepared_core(wheel: Path, version: str) -> Path:
    out = cache_dir() / "schemas" / f"kubernetes-v{version}-strict"
    stamp = out / ".from"
    if stamp.is_file() and stamp.read_text() == wheel.name:
        return out
    shutil.rmtree(out, ignore_errors=True)
    schemas.core(wheel, version, out)
    stamp.write_text(wheel.name)
    return out


def prepared_crds(files: list[Path]) -> Path:
    key = hashlib.sha256(b"".join(hashlib.sha256(f.read_bytes()).digest() for f in sorted(files))).hexdigest()[:16]
    out = cache_dir() / "schemas" / f"crds-{key}"
    if not (out / ".done").is_file():
        shutil.rmtree(out, ignore_errors=True)
        schemas.crds(files, out)
        (out / ".done").write_text("\n".join(f.name for f in files))
    return out


def render(kustomize: Path, tree: Path, target: str) -> str:
    proc = subprocess.run([str(kustomize), "build", str(tree / target)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RenderError(f"kustomize build {target} failed:\n{proc.stderr.strip()}")
    return proc.stdout


class RenderError(Exception):
    pass


def workload_problems(objs: list[dict[str, Any]]) -> list[str]:
    """Containers without requests/limits, long-running ones without liveness/readiness probes."""
    problems = []
    for obj in objs:
        if obj.get("kind") not in WORKLOADS:
            continue
        pod: dict[str, Any] = obj.get("spec", {}).get("template", {}).get("spec", {}) or {}
        name = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            res = c.get("resources") or {}
            if not res.get("requests") or not res.get("limits"):
                problems.append(f"{name} container {c.get('name')}: resources.requests and .limits are required")
        if obj["kind"] != "Job":
            for c in pod.get("containers") or []:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        problems.append(f"{name} container {c.get('name')}: {probe} is required")
    return problems


def tool_paths() -> dict[str, Path]:
    base = cache_dir()
    wheels = sorted((base / "wheels").glob("kubernetes_validate-*.whl"))
    paths = {"kustomize": base / "bin" / "kustomize", "kubeconform": base / "bin" / "kubeconform"}
    for name, path in paths.items():
        if not path.is_file():
            raise SystemExit(f"k8s-check: {name} is not installed in {path.parent}: run `make k8s-install`")
    if not wheels:
        raise SystemExit(f"k8s-check: no kubernetes-validate wheel in {base / 'wheels'}: run `make k8s-install`")
    return {**paths, "wheel": wheels[-1]}


def copy_tree(root: Path, into: Path) -> Path:
    """Copy the manifests; a missing ``secrets.env`` is filled from its ``.example``."""
    tree = into / "k8s"
    shutil.copytree(root, tree, ignore=shutil.ignore_patterns("__pycache__", "*.py", "crds"))
    for example in tree.rglob("*.env.example"):
        real = example.with_name(example.name.removesuffix(".example"))
        if not real.exists():
            shutil.copy(example, real)
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.k8s.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=HERE, help="the deploy/k8s tree to check (default: this one)")
    parser.add_argument("--k8s-version", default=K8S_VERSION, help=f"Kubernetes schemas (default {K8S_VERSION})")
    parser.add_argument("--allow-missing-crds", action="store_true", help="skip custom resources whose CRD is absent")
    parser.add_argument("--target", action="append", choices=TARGETS, help="check only these (default: all)")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    tools = tool_paths()
    failures: list[str] = []
    stale = topics.stale(root / "base" / "kafka" / "topics.yaml")
    if stale:
        failures.append(stale)
    crd_files, missing = find_crds(root)
    skip = sorted({k for src in missing for k in src.kinds})
    if missing:
        names = ", ".join(f"{s.file} ({s.project} {s.release}: {s.path})" for s in missing)
        print(f"k8s-check: CRD files not found: {names}; see deploy/k8s/crds/README.md", file=sys.stderr)
        if not args.allow_missing_crds:
            return 3
        print(f"k8s-check: WARNING: {', '.join(skip)} objects are NOT validated", file=sys.stderr)
    locations = [str(prepared_core(tools["wheel"], args.k8s_version) / "{{.ResourceKind}}{{.KindSuffix}}.json")]
    if crd_files:
        locations.append(str(prepared_crds(crd_files) / "{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"))
    with tempfile.TemporaryDirectory(prefix="k8s-check-") as tmp:
        tree = copy_tree(root, Path(tmp))
        for target in args.target or TARGETS:
            try:
                rendered = render(tools["kustomize"], tree, target)
            except RenderError as exc:
                failures.append(str(exc))
                continue
            cmd = [str(tools["kubeconform"]), "-strict", "-summary", "-output", "text"]
            for loc in locations:
                cmd += ["-schema-location", loc]
            if skip:
                cmd += ["-skip", ",".join(skip)]
            proc = subprocess.run(cmd + ["-"], input=rendered, capture_output=True, text=True)
            print(f"{target}: {proc.stdout.strip()}")
            if proc.returncode != 0:
                failures.append(f"{target}: kubeconform rejected objects:\n{proc.stdout}{proc.stderr}".strip())
            objs = [o for o in yaml.safe_load_all(rendered) if isinstance(o, dict)]
            failures += [f"{target}: {p}" for p in workload_problems(objs) + refs.problems(objs)]
    for failure in failures:
        print(f"k8s-check: FAIL {failure}", file=sys.stderr)
    print("k8s-check: " + ("FAILED" if failures else f"OK ({', '.join(args.target or TARGETS)} valid)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
