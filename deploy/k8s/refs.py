"""Cross-object checks of one rendered kustomization that no schema can make: every name an
object uses refers to an object (and key) that the same render holds.

- env ``secretKeyRef`` / ``configMapKeyRef``: the Secret / ConfigMap exists and has the key;
  ``envFrom``, volumes (``secret``, ``configMap``, ``persistentVolumeClaim``) name existing ones
  (a StatefulSet's ``volumeClaimTemplates`` count as claims);
- a Service's selector matches some pod template, and its named ``targetPort`` is a port of it;
- an Ingress backend is a Service with that port; an HPA targets an existing workload;
  a PodDisruptionBudget selects some pod template;
- a CloudNativePG ``Cluster``'s ``bootstrap.initdb.secret`` exists.
"""

from __future__ import annotations

from typing import Any

PODS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def _key(kind: str, name: str) -> tuple[str, str]:
    return kind, name


def _keys(obj: dict[str, Any]) -> set[str]:
    return set(obj.get("data") or {}) | set(obj.get("stringData") or {}) | set(obj.get("binaryData") or {})


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def problems(objs: list[dict[str, Any]]) -> list[str]:
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objs:
        by[_key(obj["kind"], obj["metadata"]["name"])] = obj
    pods: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # (workload, labels, pod spec)
    claims: set[str] = set()
    for obj in objs:
        if obj["kind"] in PODS:
            tpl = obj["spec"]["template"]
            pods.append((f"{obj['kind']}/{obj['metadata']['name']}", tpl["metadata"].get("labels", {}), tpl["spec"]))
            claims |= {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}
    out: list[str] = []

    def need(where: str, kind: str, name: str, key: str | None = None) -> None:
        obj = by.get(_key(kind, name))
        if obj is None:
            out.append(f"{where}: no {kind} {name}")
        elif key is not None and key not in _keys(obj):
            out.append(f"{where}: {kind} {name} has no key {key}")

    for where, _, spec in pods:
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        for c in containers:
            here = f"{where} container {c['name']}"
            for env in c.get("env") or []:
                source = env.get("valueFrom") or {}
                if "secretKeyRef" in source:
                    need(here, "Secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
                if "configMapKeyRef" in source:
                    need(here, "ConfigMap", source["configMapKeyRef"]["name"], source["configMapKeyRef"]["key"])
            for env_from in c.get("envFrom") or []:
                if "secretRef" in env_from:
                    need(here, "Secret", env_from["secretRef"]["name"])
                if "configMapRef" in env_from:
                    need(here, "ConfigMap", env_from["configMapRef"]["name"])
        for vol in spec.get("volumes") or []:
            if "secret" in vol:
                need(where, "Secret", vol["secret"]["secretName"])
            if "configMap" in vol:
                need(where, "ConfigMap", vol["configMap"]["name"])
            pvc = vol.get("persistentVolumeClaim")
            if pvc and pvc["claimName"] not in claims:
                need(where, "PersistentVolumeClaim", pvc["claimName"])

    def pod_ports(labels_selector: dict[str, str]) -> list[set[Any]] | None:
        found = [
            {p.get("name") for c in spec.get("containers", []) for p in c.get("ports", [])}
            | {p["containerPort"] for c in spec.get("containers", []) for p in c.get("ports", [])}
            for _, labels, spec in pods
            if _matches(labels_selector, labels)
        ]
        return found or None

    for obj in objs:
        kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec") or {}
        where = f"{kind}/{name}"
        if kind == "Service" and spec.get("selector"):
            ports = pod_ports(spec["selector"])
            if ports is None:
                out.append(f"{where}: selector {spec['selector']} matches no pod template")
            else:
                for p in spec.get("ports", []):
                    target = p.get("targetPort", p["port"])
                    if isinstance(target, str) and not any(target in s for s in ports):
                        out.append(f"{where}: targetPort {target} is no port of the selected pods")
        elif kind == "Ingress":
            for rule in spec.get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    svc = by.get(_key("Service", backend["name"]))
                    if svc is None:
                        out.append(f"{where}: no Service {backend['name']}")
                        continue
                    port = backend["port"]
                    names = {p.get("name") for p in svc["spec"]["ports"]} | {p["port"] for p in svc["spec"]["ports"]}
                    if port.get("name", port.get("number")) not in names:
                        out.append(f"{where}: Service {backend['name']} has no port {port}")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            need(where, ref["kind"], ref["name"])
        elif kind == "PodDisruptionBudget":
            if pod_ports(spec.get("selector", {}).get("matchLabels", {})) is None:
                out.append(f"{where}: selector matches no pod template")
        elif kind == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io/"):
            secret = spec.get("bootstrap", {}).get("initdb", {}).get("secret", {}).get("name")
            if secret:
                need(where, "Secret", secret, "username")
                need(where, "Secret", secret, "password")
    return out
