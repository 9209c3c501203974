"""The core Kubernetes objects of infra/k8s/: valid for the API server (kubernetes-validate), and wired together."""

from __future__ import annotations

import copy
import re
from urllib.parse import urlsplit

import pytest
import yaml

from .conftest import INFRA, cluster_spec, import_or_fail, k8s_docs, pod_templates, ray_objects

# The oldest Kubernetes we support (CronJob timeZone is GA since 1.27) and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30", "latest"]
CORE = [(name, doc) for name, doc in k8s_docs() if not doc["apiVersion"].startswith("ray.io/")]
TRACKING_URI = "http://memae-mlflow.memae.svc.cluster.local:5000"


def validate(doc: dict, version: str) -> None:
    kv = import_or_fail("kubernetes_validate")
    import kubernetes_validate.utils as kv_utils

    kv.validate(doc, kv_utils.latest_version() if version == "latest" else version, strict=True)


def objects(kind: str) -> list[dict]:
    return [doc for _, doc in CORE if doc["kind"] == kind]


def by_name(kind: str, name: str) -> dict:
    (found,) = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("doc", [doc for _, doc in CORE],
                         ids=[f"{n}:{d['kind']}:{d['metadata']['name']}" for n, d in CORE])
def test_core_objects_validate(doc, version):
    validate(doc, version)


def test_strict_validation_rejects_an_unknown_field():
    """kubernetes-validate really checks field names (strict): a misspelt container field fails."""
    kv = import_or_fail("kubernetes_validate")
    broken = copy.deepcopy(by_name("Deployment", "memae-mlflow"))
    broken["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(kv.ValidationError):
        validate(broken, "latest")


def test_every_object_is_in_the_memae_namespace():
    for name, doc in k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "memae", f"{name}: {doc['kind']} {doc['metadata']}"


def test_claims_used_by_pods_exist():
    """Every persistentVolumeClaim a pod mounts is defined here; the Ray pods' shared one is ReadWriteMany."""
    claims = {doc["metadata"]["name"]: doc for doc in objects("PersistentVolumeClaim")}
    templates = [doc["spec"]["template"] for doc in objects("Deployment")]
    templates += [template for _, obj in ray_objects() for _, template in pod_templates(cluster_spec(obj))]
    used = {
        volume["persistentVolumeClaim"]["claimName"]
        for template in templates
        for volume in template["spec"].get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    assert used >= {"memae-shared", "memae-mlflow-artifacts"}
    assert used <= set(claims)
    assert claims["memae-shared"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_secrets_are_created_by_the_readme():
    """Secrets are not committed: every Secret a manifest refers to has its `kubectl create secret` in the README."""
    text = "\n".join(path.read_text() for path in sorted((INFRA / "k8s").glob("*.yaml")))
    referenced = set(re.findall(r"secretKeyRef:\s*\n\s*name: (\S+)", text))
    referenced |= set(re.findall(r"secretName: (\S+)", text))
    assert referenced == {"memae-mlflow-db", "memae-mlflow-auth", "memae-mlflow-train", "memae-mlflow-score",
                          "memae-ray-token"}
    readme = (INFRA / "README.md").read_text()
    for secret in referenced:
        assert re.search(rf"kubectl -n memae create secret generic {secret} ", readme), secret
    assert not objects("Secret"), "secrets belong in the cluster, not in git"


def test_jobs_reach_mlflow_through_its_service():
    """MLFLOW_TRACKING_URI of every Ray pod names the MLflow Service, and the server accepts that Host header."""
    from mlflow.server.security_utils import is_allowed_host_header

    url = urlsplit(TRACKING_URI)
    service = by_name("Service", "memae-mlflow")
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert url.port in [port["port"] for port in service["spec"]["ports"]]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"

    container = by_name("Deployment", "memae-mlflow")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert is_allowed_host_header(allowed, url.netloc)
    assert is_allowed_host_header(allowed, "localhost:5000")  # kubectl port-forward
    assert not is_allowed_host_header(allowed, "attacker.example:5000")
    # The database password reaches the URI by Kubernetes' $(VAR) expansion, which needs the variable first.
    names = [item["name"] for item in container["env"]]
    assert names.index("POSTGRES_PASSWORD") < names.index("MLFLOW_BACKEND_STORE_URI")
    assert "$(POSTGRES_PASSWORD)@memae-postgres:5432/" in env["MLFLOW_BACKEND_STORE_URI"]

    for label, obj in ray_objects():
        for group, template in pod_templates(cluster_spec(obj)):
            for ray_container in template["spec"]["containers"]:
                ray_env = {item["name"]: item.get("value") for item in ray_container.get("env", [])}
                assert ray_env.get("MLFLOW_TRACKING_URI") == TRACKING_URI, f"{label} {group}"


def test_nightly_cronjob_creates_the_rayjob_in_its_configmap():
    """The CronJob's pod creates the RayJob stored in the ConfigMap, with a service account allowed to do only that."""
    cronjob = by_name("CronJob", "memae-score-nightly")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    config_map = by_name("ConfigMap", volumes["rayjob"]["configMap"]["name"])
    (key,) = config_map["data"]
    assert container["command"] + container["args"] == ["kubectl", "create", "-f", f"{mounts['rayjob']}/{key}"]
    rayjob = yaml.safe_load(config_map["data"][key])
    assert rayjob["kind"] == "RayJob" and "generateName" in rayjob["metadata"]  # a new RayJob every night

    account = pod["serviceAccountName"]
    assert by_name("ServiceAccount", account)
    binding = by_name("RoleBinding", account)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "memae"}]
    role = by_name("Role", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def env_sources(container: dict) -> dict[str, tuple[str, str] | str]:
    """NAME -> (secret, key) for variables from a Secret, NAME -> value for the others."""
    return {
        item["name"]: (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
        if "valueFrom" in item else item["value"]
        for item in container.get("env", [])
    }


def selects(selector: dict, labels: dict) -> bool:
    """Whether a matchLabels-only label selector selects an object with these labels."""
    assert set(selector) == {"matchLabels"}, "only matchLabels is used here"
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_mlflow_server_requires_authentication():
    """The server runs MLflow's basic-auth app; its admin password and form key come from a Secret; its user store
    has a volume of its own, not the artifact volume the server serves."""
    pod = by_name("Deployment", "memae-mlflow")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:2] == ["mlflow", "server"] and args[args.index("--app-name") + 1] == "basic-auth"
    env = env_sources(container)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == ("memae-mlflow-auth", "admin-password")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == ("memae-mlflow-auth", "secret-key")
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # the one path that needs no credentials
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    claims = {volume["name"]: volume["persistentVolumeClaim"]["claimName"] for volume in pod["volumes"]}
    assert claims[mounts["/mlflow-auth"]] == "memae-mlflow-auth" != claims[mounts["/mlartifacts"]]
    # Both are ReadWriteOnce and the store is SQLite: never two server pods at once.
    deployment = by_name("Deployment", "memae-mlflow")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"


def test_ray_pods_authenticate_to_mlflow_as_their_job():
    """Every Ray container gets an MLflow user from a Secret: the nightly scoring clusters the scoring user (who may
    only read the model), the training and interactive clusters the training user (who moves @champion)."""
    for label, obj in ray_objects():
        scoring = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "score"
        secret = "memae-mlflow-score" if scoring else "memae-mlflow-train"
        for group, template in pod_templates(cluster_spec(obj)):
            for container in template["spec"]["containers"]:
                env = env_sources(container)
                assert env["MLFLOW_TRACKING_USERNAME"] == (secret, "username"), f"{label} {group}"
                assert env["MLFLOW_TRACKING_PASSWORD"] == (secret, "password"), f"{label} {group}"


def test_network_policies_admit_only_the_ray_pods_to_mlflow():
    """MLflow takes connections from memae's Ray pods only (on its HTTP port), PostgreSQL from MLflow only."""
    mlflow_policy = by_name("NetworkPolicy", "memae-mlflow")["spec"]
    server_labels = by_name("Deployment", "memae-mlflow")["spec"]["template"]["metadata"]["labels"]
    assert selects(mlflow_policy["podSelector"], server_labels)
    assert mlflow_policy["policyTypes"] == ["Ingress"]
    (rule,) = mlflow_policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}  # pods of this namespace, not other namespaces or addresses

    ray_pods = [template for _, obj in ray_objects() for _, template in pod_templates(cluster_spec(obj))]
    assert all(selects(source["podSelector"], template.get("metadata", {}).get("labels", {})) for template in ray_pods)
    others = [doc["spec"]["template"] for doc in objects("Deployment") + objects("StatefulSet")]
    others.append(by_name("CronJob", "memae-score-nightly")["spec"]["jobTemplate"]["spec"]["template"])
    assert not any(selects(source["podSelector"], template.get("metadata", {}).get("labels", {}))
                   for template in others)

    database_policy = by_name("NetworkPolicy", "memae-postgres")["spec"]
    database_labels = by_name("StatefulSet", "memae-postgres")["spec"]["template"]["metadata"]["labels"]
    assert selects(database_policy["podSelector"], database_labels)
    (rule,) = database_policy["ingress"]
    assert [selects(peer["podSelector"], server_labels) for peer in rule["from"]] == [True]
    assert rule["ports"] == [{"protocol": "TCP", "port": "postgres"}]


def test_nightly_cronjob_retries_only_its_own_kubectl():
    """The CronJob's pod only creates the RayJob (the scoring job's retries on exit 3 run inside it): a few tries of
    `kubectl create`, and a pod disrupted before it ran does not count as one."""
    job = by_name("CronJob", "memae-score-nightly")["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # what podFailurePolicy requires
    assert 0 < job["backoffLimit"] <= 3
    assert job["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
