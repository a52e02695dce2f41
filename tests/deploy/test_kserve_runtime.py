"""``deploy/kserve``: the ClusterServingRuntime, the InferenceService example and the Dockerfile.

There is no Docker engine and no Kubernetes cluster here. What runs instead:

- the YAML files parse, and every field they set is a field of KServe's own API models
  (``kserve.models``, and ``kubernetes.client`` for the pod parts), nested all the way down;
- the command the pod would run, the image's ENTRYPOINT followed by the runtime's ``args`` with
  ``{{.Name}}`` filled in (Kubernetes ``args`` replace the image's CMD), is run from a directory
  laid out as KServe's storage initializer leaves ``/mnt/models``, and answers V2 requests from
  Triton's and KServe's own clients (REST and gRPC) as numpy does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

yaml = pytest.importorskip("yaml")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

from ..serve.conftest import affine, affine_model  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kserve"


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


# -- the YAML files against KServe's API models ---------------------------------------------------
# in a child process: kserve and Triton's client cannot be imported in one (both register the V2
# protobuf messages in the default pool; see tests/serve/test_kserve_clients.py)
FIELDS = r"""
import json, sys
import yaml
import kserve.models as ks
import kubernetes.client.models as k8s

PRIMITIVE = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}

def model_class(name):
    for module in (ks, k8s):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no API model {name}")

def check(value, kind, where, errors):
    # every key of value is a field of the OpenAPI type kind, recursively
    if kind.lower().startswith("list["):
        if not isinstance(value, list):
            return errors.append(f"{where}: expected a list, got {value!r}")
        for i, v in enumerate(value):
            check(v, kind[5:-1], f"{where}[{i}]", errors)
    elif kind.lower().startswith(("dict(", "dict[")):  # dict(str, X) and Dict[str, X]
        if not isinstance(value, dict):
            return errors.append(f"{where}: expected a mapping, got {value!r}")
        for k, v in value.items():
            check(v, kind[kind.index(",") + 1 : -1].strip(), f"{where}.{k}", errors)
    elif kind in PRIMITIVE:
        if not isinstance(value, PRIMITIVE[kind]):
            errors.append(f"{where}: expected {kind}, got {value!r}")
    elif kind.endswith("Quantity"):
        if not isinstance(value, (str, int)):
            errors.append(f"{where}: expected a quantity, got {value!r}")
    else:
        cls = model_class(kind)
        if not isinstance(value, dict):
            return errors.append(f"{where}: expected a {kind} mapping, got {value!r}")
        fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
        for key, v in value.items():
            if key not in fields:
                errors.append(f"{where}: {kind} has no field {key!r}")
            else:
                check(v, cls.openapi_types[fields[key]], f"{where}.{key}", errors)
    return errors

path, api = sys.argv[1], sys.argv[2]
print(json.dumps(check(yaml.safe_load(open(path)), api, path.rsplit("/", 1)[-1], [])))
"""


@pytest.mark.parametrize(
    ("name", "kind", "api"),
    [
        ("clusterservingruntime.yaml", "ClusterServingRuntime", "V1alpha1ClusterServingRuntime"),
        ("inferenceservice.yaml", "InferenceService", "V1beta1InferenceService"),
    ],
)
def test_yaml_uses_kserve_api_fields(name, kind, api):
    if not _kserve_installed():
        pytest.skip("kserve is not installed: pip install 'infercore[kserve]'")
    doc = _load(name)
    assert doc["kind"] == kind and doc["apiVersion"].startswith("serving.kserve.io/")
    proc = subprocess.run(
        [sys.executable, "-c", FIELDS, str(DEPLOY / name), api], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == []


def test_the_field_check_catches_a_misspelt_field(tmp_path):
    if not _kserve_installed():
        pytest.skip("kserve is not installed: pip install 'infercore[kserve]'")
    doc = _load("clusterservingruntime.yaml")
    doc["spec"]["containers"][0]["arg"] = doc["spec"]["containers"][0].pop("args")
    doc["spec"]["supportedModelFormat"] = doc["spec"].pop("supportedModelFormats")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-c", FIELDS, str(bad), "V1alpha1ClusterServingRuntime"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = json.loads(proc.stdout)
    assert "bad.yaml.spec: V1alpha1ServingRuntimeSpec has no field 'supportedModelFormat'" in errors
    assert "bad.yaml.spec.containers[0]: V1Container has no field 'arg'" in errors


def test_the_inferenceservice_names_the_runtime_and_a_format_it_supports():
    runtime, isvc = _load("clusterservingruntime.yaml"), _load("inferenceservice.yaml")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe injects /mnt/models into


# -- the image's command on the storage initializer's layout -------------------------------------
def _dockerfile_exec(instruction: str) -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith(instruction + " ")]
    return json.loads(line[len(instruction) + 1 :])  # the exec (JSON) form


def _pod_command(name: str, models_dir: Path, ports: dict[str, int]) -> list[str]:
    """ENTRYPOINT + the runtime's args (which replace CMD), as the kubelet runs them."""
    (container,) = _load("clusterservingruntime.yaml")["spec"]["containers"]
    args = [a.replace("{{.Name}}", name) for a in container["args"]]
    args = [str(models_dir) if a == "/mnt/models" else a for a in args]
    for flag, port in ports.items():  # the pod's ports, moved to free ones on this shared machine
        args = [f"--{flag}-port={port}" if a.startswith(f"--{flag}-port=") else a for a in args]
    entry = _dockerfile_exec("ENTRYPOINT")
    exe = shutil.which(entry[0], path=str(Path(sys.executable).parent))
    assert exe, f"{entry[0]} is not installed beside {sys.executable}"
    return [exe, *entry[1:], *args, "--host", "127.0.0.1"]


def test_dockerfile_cmd_and_runtime_args_agree():
    cmd = _dockerfile_exec("CMD")
    (container,) = _load("clusterservingruntime.yaml")["spec"]["containers"]
    assert cmd[0] == container["args"][0] == "/mnt/models"
    def unnamed(args: list[str]) -> list[str]:
        return [a for a in args if not a.startswith("--model-name=")]

    assert unnamed(container["args"]) == unnamed(cmd)
    assert "--model-name={{.Name}}" in container["args"]  # a directory without a name is a repository
    assert _dockerfile_exec("ENTRYPOINT") == ["infercore", "serve"]
    assert re.search(r"^USER 1000$", (DEPLOY / "Dockerfile").read_text(), re.M)  # runAsNonRoot


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_image_command_serves_the_storage_initializer_layout(tmp_path):
    # storageUri: gs://bucket/affine.onnx -> the storage initializer downloads it to /mnt/models/
    mnt = tmp_path / "mnt" / "models"
    affine_model(mnt / "affine-v3.onnx", 3.0)
    ports = {"http": _free_port(), "grpc": _free_port(), "metrics": _free_port()}
    cmd = _pod_command("affine", mnt, ports)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        started = _wait_started(proc)
        assert started["models"] == ["affine"] and started["ports"] == ports
        x = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
        want = affine(x, 3.0)
        c = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}")
        for binary in (True, False):
            inp = httpclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            res = c.infer("affine", [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)])
            np.testing.assert_allclose(res.as_numpy("y"), want["y"], rtol=1e-6)
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        inp = grpcclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(g.infer("affine", [inp]).as_numpy("idx"), want["idx"])
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as r:
            assert b"infercore_request" in r.read()  # where the runtime's prometheus annotation points
        if _kserve_installed():
            from ..serve.test_kserve_clients import check_kserve_answers, kserve_clients

            check_kserve_answers(kserve_clients(ports["http"], ports["grpc"], x), x)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def _kserve_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("kserve") is not None


def _wait_started(proc: subprocess.Popen) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    assert proc.stderr is not None
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "server started":
            return rec  # type: ignore[no-any-return]
    proc.kill()
    raise AssertionError(f"the server did not start: {''.join(seen)[-3000:]}")
