"""deploy/k8s: `make k8s-check` renders every kustomization with the real kustomize and validates
every object (Kubernetes schemas, Strimzi / CloudNativePG CRD schemas, names that refer to
other objects); a broken manifest makes it fail. The manifests name only real settings and
health paths; the KafkaTopics are the registry's; the Dockerfile copies what exists and
installs from the lock.

`make k8s-check` needs the tools `make k8s-install` caches (`make test` installs them before
entering the network namespace). The CRD files are not in the repository (deploy/k8s/crds/
README.md says where they come from): without them the custom resources cannot be validated,
and the tests that need them say so and skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.k8s import check, topics
from producers.topics import REGISTRY
from tests.unit.test_docs import env_names, settings_classes

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
_, MISSING_CRDS = check.find_crds(K8S)
needs_crds = pytest.mark.skipif(
    bool(MISSING_CRDS),
    reason="CRD files absent (deploy/k8s/crds/README.md): " + ", ".join(s.file for s in MISSING_CRDS),
)
CHECK_ARGS = "--allow-missing-crds" if MISSING_CRDS else ""


def k8s_check(tree: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``make k8s-check``; on a broken copy ``tree``, of the prod overlay only (it keeps the base's values)."""
    args = CHECK_ARGS
    cmd = ["make", "--no-print-directory", "k8s-check"]
    if tree is not None:
        args += " --target overlays/prod"
        cmd.append(f"K8S_DIR={tree}")
    cmd.append(f"K8S_CHECK_ARGS={args.strip()}")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def broken_copy(tmp_path: Path, rel: str, old: str, new: str) -> Path:
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("__pycache__"))
    path = tree / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {rel}"
    path.write_text(text.replace(old, new))
    return tree


def test_make_k8s_check_renders_and_validates_every_kustomization() -> None:
    proc = k8s_check()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for target in check.TARGETS:
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"{target}: "))
        m = re.search(r"(\d+) resources found.*Valid: (\d+), Invalid: 0, Errors: 0, Skipped: (\d+)", line)
        assert m, line
        found, valid, skipped = (int(g) for g in m.groups())
        assert valid > 0 and found == valid + skipped, line
        if not MISSING_CRDS:
            assert skipped == 0, line
    assert "k8s-check: OK" in proc.stdout


def test_a_wrong_field_type_in_a_deployment_fails_the_check(tmp_path: Path) -> None:
    tree = broken_copy(tmp_path, "base/api/api.yaml", "  replicas: 2\n", '  replicas: "two"\n')
    proc = k8s_check(tree)
    assert proc.returncode != 0
    assert "Deployment api is invalid" in proc.stderr + proc.stdout
    assert "/spec/replicas" in proc.stderr + proc.stdout


@needs_crds
def test_an_unknown_field_in_the_kafka_resource_fails_the_check(tmp_path: Path) -> None:
    tree = broken_copy(
        tmp_path, "base/kafka/kafka.yaml", "  kafka:\n    listeners:", "  kafka:\n    replicaz: 3\n    listeners:"
    )
    proc = k8s_check(tree)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "Kafka roomlog is invalid" in out
    assert "additional properties 'replicaz' not allowed" in out


@needs_crds
def test_a_wrong_type_in_the_postgres_cluster_fails_the_check(tmp_path: Path) -> None:
    tree = broken_copy(tmp_path, "base/postgres/cluster.yaml", "  instances: 3\n", "  instances: three\n")
    proc = k8s_check(tree)
    assert proc.returncode != 0
    assert "Cluster roomlog-pg is invalid" in proc.stderr + proc.stdout


def test_a_pod_without_limits_fails_the_check(tmp_path: Path) -> None:
    tree = broken_copy(
        tmp_path,
        "base/migrate/job.yaml",
        "            limits:\n              cpu: 500m\n              memory: 256Mi\n",
        "",
    )
    proc = k8s_check(tree)
    assert proc.returncode != 0
    assert "Job/migrate container migrate: resources.requests and .limits are required" in proc.stderr


def test_a_secret_key_that_does_not_exist_fails_the_check(tmp_path: Path) -> None:
    tree = broken_copy(
        tmp_path, "base/recorder/recorder.yaml", "key: ROOMLOG_API_API_SECRET", "key: ROOMLOG_API_SECRET"
    )
    proc = k8s_check(tree)
    assert proc.returncode != 0
    assert re.search(
        r"Deployment/recorder container recorder: Secret roomlog-secrets-\w+ has no key ROOMLOG_API_SECRET", proc.stderr
    )


def test_the_kafka_topics_are_generated_from_the_registry(tmp_path: Path) -> None:
    assert topics.stale() is None, "run `python -m deploy.k8s.topics`"
    docs = [d for d in yaml.safe_load_all(topics.TOPICS_YAML.read_text()) if d]
    by_name = {d["spec"]["topicName"]: d for d in docs}
    for spec in REGISTRY:
        assert by_name[spec.name]["spec"]["partitions"] == spec.partitions
        assert by_name[spec.name]["spec"]["config"] == spec.config()
        assert f"{spec.name}.dlq" in by_name
    changelogs = topics.changelogs()
    assert changelogs and all(n.endswith("-changelog") for n in changelogs)
    for name, partitions in changelogs.items():
        assert by_name[name]["spec"]["partitions"] == partitions
        assert by_name[name]["spec"]["config"]["cleanup.policy"] == "compact"
    assert len(docs) == len(topics.topic_names())
    stale = tmp_path / "topics.yaml"
    stale.write_text(topics.TOPICS_YAML.read_text().replace("partitions: 4", "partitions: 5", 1))
    assert "out of date" in (topics.stale(stale) or "")


async def test_wait_topics_names_what_is_missing_when_the_broker_is_unreachable() -> None:
    from deploy.k8s.wait_topics import wait

    assert await wait("127.0.0.1:1", ["a", "b"], timeout_s=0, interval_s=0.1) == ["a", "b"]


def objects(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and "kind" in d]


def base_objects() -> list[dict[str, Any]]:
    return [o for p in sorted(BASE.rglob("*.yaml")) if p.name != "kustomization.yaml" for o in objects(p)]


def test_streams_run_as_many_replicas_as_partitions_allow() -> None:
    streams = next(o for o in base_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "streams")
    assert streams["spec"]["replicas"] == max(s.partitions for s in REGISTRY)


#: names the manifests set for their own use (composed into DATABASE_URL, node ids, probes)
MANIFEST_ONLY = {"POD_NAME", "ROOMLOG_DB_USER", "ROOMLOG_DB_PASSWORD", "PYTHONUNBUFFERED"}
MODULE_CLASS = {"api": "ApiSettings", "streams": "StreamsSettings", "media_node": "NodeSettings"}
MODULE_CLASS |= {"recorder": "RecorderSettings"}


def settings_env() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cls in settings_classes():
        out[cls.__name__] = {e for name, f in cls.model_fields.items() for e in env_names(cls, name, f)}
    return out


def test_every_env_var_the_manifests_set_is_a_real_setting_of_its_service() -> None:
    known = settings_env()
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    shared = {lit.split("=", 1)[0] for g in kustomization["configMapGenerator"] for lit in g["literals"]}
    every = set().union(*known.values())
    turn = {"TURN_EXTERNAL_IP", "TURN_MIN_PORT", "TURN_MAX_PORT"}  # coturn's init container
    assert shared - every - MANIFEST_ONLY == turn
    checked = 0
    for obj in base_objects():
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            cmd = " ".join(c.get("command", []))
            module = re.search(r"python -m (\w+)", cmd)
            if not module or module.group(1) not in MODULE_CLASS:
                continue
            names = {e["name"] for e in c.get("env", [])}
            unknown = names - known[MODULE_CLASS[module.group(1)]] - MANIFEST_ONLY
            assert not unknown, f"{obj['metadata']['name']}: not settings of {module.group(1)}: {unknown}"
            checked += 1
    assert checked == 4  # api, streams, media node, recorder


def test_probes_use_the_real_health_endpoints() -> None:
    from api.health import router

    paths = {getattr(r, "path", "") for r in router.routes}
    api = next(o for o in base_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "api")
    c = api["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" in paths
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" in paths
    port = next(e["value"] for e in c["env"] if e["name"] == "ROOMLOG_API_PORT")
    assert c["ports"][0]["containerPort"] == int(port)
    # the metrics-port services probe the port their settings open
    for name, var, probe_port in (
        ("streams", "ROOMLOG_STREAMS_METRICS_PORT", 9101),
        ("recorder", "ROOMLOG_RECORDER_METRICS_PORT", 9103),
    ):
        dep = next(o for o in base_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert next(e["value"] for e in c["env"] if e["name"] == var) == str(probe_port)
        assert c["livenessProbe"]["exec"]["command"][-1] == str(probe_port)


def test_the_probe_asks_the_metrics_port_of_the_pods_ordinal(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import start_http_server

    from deploy.k8s import probe

    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        port = server.server_port
        monkeypatch.setenv("POD_NAME", "media-node-3")
        assert probe.main(["--port-base", str(port - 3), "--ordinal-from", "POD_NAME"]) == 0
        assert probe.main(["--port", str(port)]) == 0
        monkeypatch.setenv("POD_NAME", "media-node-0")
        assert probe.main(["--port-base", "1", "--ordinal-from", "POD_NAME", "--timeout", "2"]) == 1  # closed
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_the_dockerfile_copies_what_exists_and_installs_from_the_lock() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.startswith("#")]
    assert sum(ln.startswith("FROM ") for ln in lines) >= 2, "multi-stage"
    copies = [ln.split()[1:] for ln in lines if ln.startswith("COPY ") and "--from=" not in ln]
    assert copies
    for parts in copies:
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
    assert "--constraint requirements.lock" in text
    assert any(ln.startswith("USER ") and not ln.split()[1].startswith(("0", "root")) for ln in lines)
    copied = {src.rstrip("/").split("/")[0] for parts in copies for src in parts[:-1]}
    for package in ("producers", "streams", "api", "media_node", "recorder", "edge", "client", "db", "observability"):
        assert package in copied, f"the image lacks {package}/"


IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
failed = []
for pkg in sys.argv[1:]:
    for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
        if info.name.startswith("observability.dashboards"):
            continue  # the dashboards generator is a development tool (grafana-foundation-sdk)
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed.append(f"{info.name}: {exc!r}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_the_images_files_and_runtime_dependencies_run_every_service(tmp_path: Path) -> None:
    """No container engine here: rebuild the image's /app and /opt/venv as the Dockerfile
    does (its COPY lines; pyproject's dependencies constrained by the lock, wheels only, from
    uv's cache), then import every service module, entry points included, with nothing else on
    the path."""
    import os
    import tomllib

    cache = Path(os.environ.get("ROOMLOG_CACHE", Path.home() / ".cache" / "roomlog"))
    uv = cache / "bootstrap" / "bin" / "uv"
    assert uv.is_file(), "make venv installs uv"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (tmp_path / "runtime.txt").write_text("\n".join(deps) + "\n")
    env = {**os.environ, "UV_CACHE_DIR": str(cache / "uv")}
    venv = tmp_path / "venv"
    subprocess.run(
        [str(uv), "venv", "-q", str(venv), "--python", str(ROOT / ".venv" / "bin" / "python")], env=env, check=True
    )
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "-q",
            "--offline",
            "--only-binary",
            ":all:",
            "--python",
            str(venv / "bin" / "python"),
        ]
        + ["-c", str(ROOT / "requirements.lock"), "-r", str(tmp_path / "runtime.txt")],
        env=env,
        check=True,
        timeout=300,
    )
    app = tmp_path / "app"
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, dest = line.split()[1:]
            for src in sources:
                target = app / dest
                if (ROOT / src).is_dir():
                    shutil.copytree(
                        ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / src, target)
    clean = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1"}
    python = str(venv / "bin" / "python")
    # every module, the entry points (``<service>.__main__``) and the probe included
    packages = ["producers", "streams", "api", "media_node", "recorder", "edge", "client", "db", "observability"]
    packages.append("deploy")
    try:
        proc = subprocess.run(
            [python, "-c", IMPORT_EVERYTHING, *packages], env=clean, cwd="/", capture_output=True, text=True
        )
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~300 MB
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
