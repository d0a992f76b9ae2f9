"""The Helm chart (manifests/charts/dynamic-prefix): lint, schema, secure defaults, a real install, install.yaml."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.ground.apiserver import KubeAPI
from tests.packaging.conftest import CHART, KUBE_VERSION, ROOT, find, render

FULL = [
    "replicaCount=2", "mqtt.enabled=true", "mqtt.host=broker.lan", "mqtt.username=clusterd", "mqtt.password=pw",
    "mqtt.caSecret=mqtt-ca", "webhook.secret=s3cret", "webhook.tlsSecret=hook-tls", "webhook.ingress.enabled=true",
    "webhook.ingress.host=hook.example.net", "webhook.ingress.tlsSecret=hook-cert", "serviceMonitor.enabled=true",
]  # fmt: skip


def test_lint_with_defaults_and_with_everything_on(helm: Path) -> None:
    for sets in ([], FULL, ["raFallback.enabled=true", "raFallback.nodeSelector.lan=yes"]):
        args = [str(helm), "lint", str(CHART), "--kube-version", KUBE_VERSION]
        for s in sets:
            args += ["--set", s]
        out = subprocess.run(args, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("replicaCount=0", "replicaCount"), ("serviceIPAnnotation=bgp", "serviceIPAnnotation"),
     ("webhook.path=nope", "/webhook/path"), ("mqtt.hots=x", "hots")],
)  # fmt: skip
def test_the_values_schema_refuses_bad_values(helm: Path, value: str, fragment: str) -> None:
    out = subprocess.run([str(helm), "template", "dp", str(CHART), "--kube-version", KUBE_VERSION, "--set", value],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode != 0 and fragment in out.stderr


def test_mqtt_without_a_host_is_an_error_that_says_so(helm: Path) -> None:
    out = subprocess.run([str(helm), "template", "dp", str(CHART), "--kube-version", KUBE_VERSION,
                          "--set", "mqtt.enabled=true"], capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode != 0 and "mqtt.host is required" in out.stderr


def test_secure_by_default(helm: Path) -> None:
    docs = render(helm)
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert "hostNetwork" not in pod
    assert (
        c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    )
    assert not [
        d for d in docs if d["kind"] in ("Role", "PodDisruptionBudget", "Secret", "Ingress", "ServiceMonitor")
    ]


def test_ra_fallback_gets_host_network_and_net_raw_only(helm: Path) -> None:
    docs = render(helm, "raFallback.enabled=true", "raFallback.nodeSelector.lan=yes")
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert pod["nodeSelector"] == {"lan": "yes"}
    config = find(docs, "ConfigMap")["data"]["clusterd.yaml"]
    assert "raFallback: true" in config


def test_replicas_bring_leader_election_a_pdb_and_lease_rights(helm: Path) -> None:
    docs = render(helm, *FULL)
    assert "enabled: true" in find(docs, "ConfigMap")["data"]["clusterd.yaml"].split("leaderElection:")[1]
    assert find(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    role = find(docs, "Role", "-leader")
    assert role["rules"][1]["resourceNames"] == ["dp-dynamic-prefix"]
    secret_names = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert secret_names == {"dp-dynamic-prefix-webhook", "dp-dynamic-prefix-mqtt"}
    assert find(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/v1/prefix-state"


def test_existing_secrets_are_used_not_created(helm: Path) -> None:
    docs = render(helm, "webhook.existingSecret=mine", "mqtt.enabled=true", "mqtt.host=b", "mqtt.username=u",
                  "mqtt.existingSecret=mine-too")  # fmt: skip
    assert not [d for d in docs if d["kind"] == "Secret"]
    volumes = {v["name"]: v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-secret"]["secret"]["secretName"] == "mine"
    assert volumes["mqtt-secret"]["secret"]["secretName"] == "mine-too"


@pytest.mark.apiserver
def test_helm_install_into_the_real_api_server(helm: Path, kube: KubeAPI, tmp_path: Path) -> None:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    out = subprocess.run(
        [str(helm), "install", "dp", str(CHART), "--namespace", "dynamic-prefix", "--create-namespace",
         "--kubeconfig", str(kubeconfig), "--set", "replicaCount=2", "--set", "webhook.secret=abc", "--wait=false"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No registry publishes ghcr.io/dynamic-prefix/clusterd" in out.stdout  # the NOTES say what to do
    apps = k8s.AppsV1Api(kube.admin())
    dep = apps.read_namespaced_deployment("dp-dynamic-prefix", "dynamic-prefix")
    assert dep.spec.replicas == 2
    rbac = k8s.RbacAuthorizationV1Api(kube.admin())
    assert rbac.read_cluster_role("dp-dynamic-prefix").rules
    secret = k8s.CoreV1Api(kube.admin()).read_namespaced_secret("dp-dynamic-prefix-webhook", "dynamic-prefix")
    assert secret.data == {"hmac": base64.b64encode(b"abc").decode()}, "webhook.secret=abc is the HMAC key"
    out = subprocess.run([str(helm), "uninstall", "dp", "--namespace", "dynamic-prefix", "--kubeconfig",
                          str(kubeconfig)], capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    with pytest.raises(k8s.ApiException) as err:
        rbac.read_cluster_role("dp-dynamic-prefix")
    assert err.value.status == 404, "uninstall took it away"


def test_install_yaml_is_rendered_from_the_current_chart(helm: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "render-install.py"), "--check"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr


@pytest.mark.apiserver
def test_install_yaml_is_accepted_by_the_api_server(kube: KubeAPI) -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert kube.request("POST", "/api/v1/namespaces", ns)[0] == 201
    paths = {
        "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "ServiceAccount": "/api/v1/namespaces/dynamic-prefix/serviceaccounts",
        "ConfigMap": "/api/v1/namespaces/dynamic-prefix/configmaps",
        "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "Service": "/api/v1/namespaces/dynamic-prefix/services",
        "Deployment": "/apis/apps/v1/namespaces/dynamic-prefix/deployments",
    }
    for d in docs:
        if d["kind"] == "Namespace":
            continue
        code, body = kube.request("POST", paths[d["kind"]] + "?dryRun=All", d)
        assert code in (201, 409), f"{d['kind']} {d['metadata']['name']}: {code} {body}"


def test_the_readmes_helm_template_command_works_as_written(helm: Path, tmp_path: Path) -> None:
    """The README's command, run by the helm the tests build: no extra flags, the image it names."""
    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"^helm template .*?[^\\]$", readme, re.MULTILINE | re.DOTALL)
    command = command.replace("\\\n", " ").replace("> dynamic-prefix.yaml", f"> {tmp_path}/out.yaml")
    image = "registry.example.net/dynamic-prefix/clusterd"
    env = {"PATH": f"{helm.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "IMAGE": image}
    out = subprocess.run(
        ["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"{command}: {out.stderr}"
    docs = [d for d in yaml.safe_load_all((tmp_path / "out.yaml").read_text()) if d]
    assert {"CustomResourceDefinition", "Deployment"} <= {d["kind"] for d in docs}
    assert find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image}:0.1.0"
