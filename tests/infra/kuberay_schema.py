"""JSON Schema for the KubeRay ray.io/v1 objects in infra/k8s/, written from the KubeRay CRD API reference.

Source: the generated field reference of KubeRay v1.7.0 (docs/reference/api.md in ray-project/kuberay, also at
docs.ray.io "KubeRay CRD API reference"). The fields our manifests use are all in the v1.6.2 reference as well
(authOptions.secretName and RayCronJob need 1.6). Every KubeRay-level object lists its documented fields and rejects
others, so a typo fails here instead of being pruned silently by the API server. Kubernetes types embedded in
them (pod templates, services, env) are `object` here and checked with kubernetes-validate by the tests.
"""

from __future__ import annotations

from typing import Any

OBJECT = {"type": "object"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
STRING = {"type": "string"}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


DEFS: dict[str, Any] = {
    "AuthOptions": closed({
        "mode": {"enum": ["disabled", "token"]},
        "secretName": STRING,
        "enableK8sTokenAuth": BOOL,
    }),
    "AutoscalerOptions": closed({
        "resources": OBJECT, "image": STRING, "imagePullPolicy": STRING, "securityContext": OBJECT,
        "idleTimeoutSeconds": INT, "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "version": {"enum": ["v1", "v2"]}, "env": {"type": "array"}, "envFrom": {"type": "array"},
        "volumeMounts": {"type": "array"}, "command": {"type": "array"}, "args": {"type": "array"},
    }),
    "HeadGroupSpec": closed({
        "template": OBJECT, "headService": OBJECT, "enableIngress": BOOL, "ingressOptions": OBJECT,
        "resources": STRING_MAP, "labels": STRING_MAP, "rayStartParams": STRING_MAP, "serviceType": STRING,
    }, required=("template",)),
    "WorkerGroupSpec": closed({
        "suspend": BOOL, "groupName": STRING, "replicas": INT, "minReplicas": INT, "maxReplicas": INT,
        "idleTimeoutSeconds": INT, "priority": INT, "numOfHosts": INT, "resources": STRING_MAP,
        "labels": STRING_MAP, "rayStartParams": STRING_MAP, "template": OBJECT, "scaleStrategy": OBJECT,
    }, required=("groupName", "template")),
    "RayClusterSpec": closed({
        "upgradeStrategy": OBJECT, "authOptions": {"$ref": "#/$defs/AuthOptions"}, "suspend": BOOL,
        "managedBy": STRING, "autoscalerOptions": {"$ref": "#/$defs/AutoscalerOptions"},
        "headServiceAnnotations": STRING_MAP, "enableInTreeAutoscaling": BOOL, "gcsFaultToleranceOptions": OBJECT,
        "historyServerOptions": OBJECT, "networkPolicy": OBJECT, "tlsOptions": OBJECT,
        "headGroupSpec": {"$ref": "#/$defs/HeadGroupSpec"}, "rayVersion": STRING,
        "workerGroupSpecs": {"type": "array", "items": {"$ref": "#/$defs/WorkerGroupSpec"}},
    }, required=("headGroupSpec",)),
    "RayJobSpec": closed({
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1}, "backoffLimit": INT,
        "rayClusterSpec": {"$ref": "#/$defs/RayClusterSpec"}, "submitterPodTemplate": OBJECT,
        "metadata": STRING_MAP, "clusterSelector": STRING_MAP, "submitterConfig": OBJECT, "managedBy": STRING,
        "deletionStrategy": OBJECT, "entrypoint": STRING, "runtimeEnvYAML": STRING, "jobId": STRING,
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "entrypointResources": STRING, "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"}, "ttlSecondsAfterFinished": INT,
        "preRunningDeadlineSeconds": {"type": "integer", "minimum": 1}, "shutdownAfterJobFinishes": BOOL,
        "suspend": BOOL,
    }),
    "RayCronJobSpec": closed({
        "jobTemplate": {"$ref": "#/$defs/RayJobSpec"}, "schedule": STRING,
        "timeZone": {"type": "string", "minLength": 1}, "suspend": BOOL,
    }, required=("jobTemplate", "schedule")),
}


def resource_schema(kind: str, spec: str) -> dict[str, Any]:
    """The schema of a whole ray.io/v1 object of `kind`, whose spec is the type `spec`."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": DEFS,
        **closed({
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": OBJECT,
            "spec": {"$ref": f"#/$defs/{spec}"},
        }, required=("apiVersion", "kind", "metadata", "spec")),
    }


SCHEMAS = {
    "RayCluster": resource_schema("RayCluster", "RayClusterSpec"),
    "RayJob": resource_schema("RayJob", "RayJobSpec"),
    "RayCronJob": resource_schema("RayCronJob", "RayCronJobSpec"),
}
