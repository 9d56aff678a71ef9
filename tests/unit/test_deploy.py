"""Every YAML in deploy/ parses and carries what the job needs on a cluster."""

from pathlib import Path

import yaml

from pipeline.rerank.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_every_yaml_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        assert all(isinstance(d, dict) for d in yaml.safe_load_all(f.read_text())), f


def test_rayjob_has_entry_point_gpu_workers_retries_and_secret_refs():
    (job,) = docs("kuberay/rayjob.yaml")
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert (
        spec["entrypoint"]
        == "python -m jobs.rerank_nightly --date __RUN_DATE__ --config /app/deploy/nightly.yaml"
    )
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    cluster = spec["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # one GPU per scoring actor
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    for c in (head, container):
        assert {"secretRef": {"name": "rerank-object-storage"}} in c["envFrom"]
        assert c["image"] == head["image"]
    nightly = load_config(DEPLOY / "nightly.yaml", {})
    assert workers["maxReplicas"] == nightly.scoring.max_actors
    assert "{date}" in nightly.input.uri and "{date}" in nightly.output.uri
    assert (DEPLOY / "Dockerfile").read_text().count("COPY deploy ./deploy") == 1  # config in image


def test_cronjob_forbids_overlap_and_creates_the_rayjob():
    by_kind = {d["kind"]: d for d in docs("kuberay/cronjob.yaml")}
    cron = by_kind["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = pod["containers"][0]["command"][-1]
    assert "kubectl create -f -" in script and "__RUN_DATE__" in script and "kubectl wait" in script
    assert pod["serviceAccountName"] == by_kind["ServiceAccount"]["metadata"]["name"]
    assert "create" in by_kind["Role"]["rules"][0]["verbs"]
    (kustomize,) = docs("kuberay/kustomization.yaml")
    assert kustomize["configMapGenerator"][0]["name"] == pod["volumes"][0]["configMap"]["name"]


def test_runtime_env_ships_code_not_the_venv():
    (env,) = docs("runtime_env.yaml")
    assert env["working_dir"] == "." and ".venv" in env["excludes"]
    assert env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"
