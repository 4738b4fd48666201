"""Offline checks of the shipped cluster configs (cluster/launcher, cluster/kuberay) and of the
secure defaults of the local cluster script. Nothing here starts a process that listens.

The launcher YAML is validated against the JSON schema for cluster configs that the pinned Ray
ships as data (`ray/autoscaler/ray-schema.json`, read with `jsonschema`) plus the cross-field
rules `ray up` applies before it contacts a cloud. No KubeRay CRD schema is available offline, so the manifests
are checked field by field against the KubeRay v1 API (RayCluster, RayJob) as documented for
KubeRay >= 1.5.1 (`authOptions`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "launcher" / "aws.yaml"
KUBERAY = CLUSTER / "kuberay"
sys.path.insert(0, str(CLUSTER))
import clusterstate  # noqa: E402
import ctcluster  # noqa: E402
import raynodes  # noqa: E402

HEX_SECRET = re.compile(r"\b[0-9a-f]{40,}\b")
AWS_KEY = re.compile(r"\bAKIA[0-9A-Z]{16}\b")
SECRETISH = re.compile(r"(token|secret|password|passwd|api[_-]?key)", re.I)
ALL_INTERFACES = ("0.0.0.0", "::/0", "[::]")
BIND_ANNOTATION = "ct.dev/binds-all-interfaces"
# Ray's JSON schema for cluster launcher configs, shipped with Ray as a data file of its public
# `ray.autoscaler` package (the one `ray up` validates against).
RAY_SCHEMA = json.loads(files("ray.autoscaler").joinpath("ray-schema.json").read_text())


def load_launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def kuberay_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> list[dict]:
    return [d for _, d in kuberay_docs() if d["kind"] == kind]


def cluster_specs() -> list[dict]:
    """RayCluster specs: those of RayCluster objects and the one embedded in each RayJob."""
    return [d["spec"] for d in of_kind("RayCluster")] + [
        d["spec"]["rayClusterSpec"] for d in of_kind("RayJob")
    ]


def pod_templates(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]] + [
        g["template"] for g in spec.get("workerGroupSpecs", [])
    ]


# --------------------------------------------------------------------------- launcher


def check_launcher(cfg: dict) -> None:
    """Raise if `cfg` is not a cluster config that `ray up` of the pinned Ray accepts: Ray's own
    schema (unknown keys, types, required fields) and the rules across fields that a schema
    cannot state (the head is one of the node types; no type starts more workers than it may
    have; the types' minimums fit in the cluster's `max_workers`)."""
    jsonschema.validate(cfg, RAY_SCHEMA)
    types = cfg["available_node_types"]
    if cfg["head_node_type"] not in types:
        raise ValueError(f"head_node_type {cfg['head_node_type']!r} is not a node type")
    for name, node_type in types.items():
        if node_type.get("min_workers", 0) > node_type.get("max_workers", cfg["max_workers"]):
            raise ValueError(f"{name}: min_workers above max_workers")
    if sum(t.get("min_workers", 0) for t in types.values()) > cfg["max_workers"]:
        raise ValueError("the node types' min_workers add up to more than max_workers")


def test_launcher_config_passes_the_schema_of_the_pinned_ray():
    check_launcher(load_launcher())
    assert ray.__version__.startswith("2.60")
    assert RAY_SCHEMA["additionalProperties"] is False  # unknown top-level keys are errors


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.update(unknown_top_level_key=1),
        lambda c: c.update(max_workers="eight"),
        lambda c: c["provider"].pop("type"),
        lambda c: c["available_node_types"]["ray.worker.cpu"].pop("node_config"),
        lambda c: c["available_node_types"]["ray.worker.cpu"]["resources"].update(CPU=-1),
        lambda c: c.update(head_node_type="ray.head.gpu"),
        lambda c: c["available_node_types"]["ray.worker.cpu"].update(min_workers=99),
        lambda c: c["available_node_types"]["ray.worker.cpu"].update(min_workers=9, max_workers=9),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "no-provider-type",
        "node-type-without-node-config",
        "negative-resource",
        "unknown-head-type",
        "min-above-max-workers",
        "minimums-above-cluster-max",
    ],
)
def test_the_launcher_schema_check_does_reject_broken_configs(breakage):
    cfg = load_launcher()
    breakage(cfg)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        check_launcher(cfg)


def test_launcher_is_one_cloud_with_cpu_workers_and_autoscaling_bounds():
    cfg = load_launcher()
    assert cfg["provider"]["type"] == "aws"
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head runs no trials
    workers = [v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]]
    assert workers
    for w in workers:
        assert 0 <= w["min_workers"] <= w["max_workers"] <= cfg["max_workers"]
        assert "GPU" not in w.get("resources", {})
        assert not w["node_config"]["InstanceType"].startswith(("p", "g"))  # CPU instance types


def test_launcher_setup_installs_this_project_with_cpu_torch():
    cfg = load_launcher()
    setup = "\n".join(cfg["setup_commands"])
    assert "/home/ubuntu/ct" in cfg["file_mounts"] and cfg["file_mounts"]["/home/ubuntu/ct"] == "."
    assert "-e ~/ct" in setup
    assert "download.pytorch.org/whl/cpu" in setup
    assert ".gitignore" in cfg["rsync_filter"]  # .venv, runs and cluster/.state stay home
    assert (REPO / "pyproject.toml").exists()


def test_launcher_turns_token_auth_on_and_keeps_the_dashboard_on_loopback():
    cfg = load_launcher()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
        assert all("RAY_AUTH_TOKEN_PATH=" in c for c in start), key
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "--disable-usage-stats" in head
    text = LAUNCHER.read_text()
    assert not any(a in text for a in ALL_INTERFACES)


def test_launcher_token_comes_from_a_git_ignored_file_not_from_the_yaml():
    cfg = load_launcher()
    sources = [src for dst, src in cfg["file_mounts"].items() if "auth_token" in dst]
    assert sources == ["cluster/.state/aws_auth_token"]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", sources[0]], cwd=REPO, capture_output=True
    )
    assert ignored.returncode == 0, f"{sources[0]} is not git-ignored"
    assert "chmod 600 ~/.ct/auth_token" in " ".join(cfg["setup_commands"])


# --------------------------------------------------------------------------- kuberay


def test_kuberay_manifests_have_api_version_kind_and_name():
    docs = kuberay_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"RayCluster", "RayJob", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds
    expected = {
        "RayCluster": "ray.io/v1",
        "RayJob": "ray.io/v1",
        "NetworkPolicy": "networking.k8s.io/v1",
        "PersistentVolumeClaim": "v1",
    }
    for path, d in docs:
        assert d["apiVersion"] == expected[d["kind"]], path
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]), path


def test_kuberay_clusters_pin_our_ray_version_and_turn_token_auth_on():
    specs = cluster_specs()
    assert len(specs) == 2
    for spec in specs:
        assert spec["rayVersion"] == ray.__version__
        assert spec["authOptions"] == {"mode": "token"}


def test_kuberay_groups_are_complete_and_bounded():
    for spec in cluster_specs():
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"
        assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # never LoadBalancer/NodePort
        assert spec["workerGroupSpecs"]
        for g in spec["workerGroupSpecs"]:
            assert g["groupName"] and isinstance(g["rayStartParams"], dict)
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        for tpl in pod_templates(spec):
            (container,) = tpl["spec"]["containers"]
            assert container["name"] and container["image"]
            assert container["resources"]["limits"]["cpu"]
            assert "nvidia.com/gpu" not in container["resources"]["limits"]
            env = {e["name"]: e for e in container["env"]}
            assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://")
            assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
            assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == "true"
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/mnt/ct-runs" in mounts  # shared Tune storage for every node


def test_rayjob_runs_a_sweep_of_a_shipped_config_and_cleans_up():
    (job,) = of_kind("RayJob")
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["ct-sweep", "run"]
    config = Path(argv[2])
    assert config.is_relative_to("/home/ray/ct")  # WORKDIR of cluster/kuberay/Dockerfile
    local = REPO / config.relative_to("/home/ray/ct")
    assert local.exists(), f"{local} does not exist in the repository"
    assert argv[argv.index("--storage") + 1].startswith("/mnt/ct-runs/")
    assert argv[argv.index("--tracking-uri") + 1].startswith("http://")
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0


def test_rayjob_entrypoint_is_accepted_by_ct_sweep():
    ct_sweep = Path(sys.executable).parent / "ct-sweep"
    if not ct_sweep.exists():
        pytest.skip("ct-sweep is not installed")
    (job,) = of_kind("RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    argv[2] = str(REPO / Path(argv[2]).relative_to("/home/ray/ct"))
    res = subprocess.run(
        [str(ct_sweep), *argv[1:], "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, RAY_AUTH_MODE="disabled"),
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_all_interfaces_only_with_an_explicit_reason_and_a_network_fence():
    (policy,) = of_kind("NetworkPolicy")
    fenced = policy["spec"]["podSelector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for path, d in kuberay_docs():
        text = yaml.safe_dump(d)
        if not any(a in text for a in ALL_INTERFACES):
            continue
        assert BIND_ANNOTATION in d["metadata"].get("annotations", {}), path
        spec = d["spec"].get("rayClusterSpec", d["spec"])
        assert spec["authOptions"]["mode"] == "token", path
        for tpl in pod_templates(spec):
            labels = tpl["metadata"]["labels"]
            assert fenced.items() <= labels.items(), f"{path}: pods not selected by the policy"


def test_no_secret_is_inlined_in_any_shipped_config():
    files = [LAUNCHER, *sorted(KUBERAY.glob("*.yaml")), KUBERAY / "Dockerfile"]
    files += sorted(CLUSTER.glob("*.sh"))
    for path in files:
        text = path.read_text()
        assert not HEX_SECRET.search(text), path
        assert not AWS_KEY.search(text), path
    for path, d in kuberay_docs():
        for spec in [d["spec"].get("rayClusterSpec", d["spec"])] if "Ray" in d["kind"] else []:
            for tpl in pod_templates(spec):
                for container in tpl["spec"]["containers"]:
                    for e in container.get("env", []):
                        if SECRETISH.search(e["name"]):
                            assert "valueFrom" in e and "value" not in e, (path, e["name"])


# --------------------------------------------------------------------------- local scripts


def test_local_cluster_binds_loopback_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("CT_BIND_HOST", raising=False)
    assert clusterstate.bind_host(None) == "127.0.0.1"
    monkeypatch.setenv("CT_BIND_HOST", "10.1.2.3")
    assert clusterstate.bind_host(None) == "10.1.2.3"
    assert clusterstate.bind_host("192.168.0.9") == "192.168.0.9"
    args = ctcluster.build_parser().parse_args(["up"])
    assert args.host is None and args.workers == 2 and args.head_cpus == 0.0


def test_local_cluster_deals_the_machines_gpus_to_its_workers_one_node_each(tmp_path, monkeypatch):
    """`up --gpus N`: the N GPUs go round-robin to the worker nodes, each node sees only its
    own (CUDA_VISIBLE_DEVICES) and tells Ray as many; without --gpus no node has one."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert raynodes.deal_gpus(3, 2) == [["0", "2"], ["1"]]
    assert raynodes.deal_gpus(1, 3) == [["0"], [], []]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert raynodes.deal_gpus(2, 2) == [["4"], ["6"]]
    with pytest.raises(clusterstate.ClusterError, match="shows only 3"):
        raynodes.deal_gpus(4, 2)

    spawned = []
    monkeypatch.setattr(raynodes, "spawn", lambda *a: spawned.append(a) or {})
    raynodes.start_worker(tmp_path, "127.0.0.1", "127.0.0.1:6390", 1, 1.0, 256, ["4", "6"])
    raynodes.start_worker(tmp_path, "127.0.0.1", "127.0.0.1:6390", 2, 1.0, 256)
    (_, gpu_cmd, _, gpu_env), (_, cpu_cmd, _, cpu_env) = spawned
    assert "--num-gpus=2" in gpu_cmd and gpu_env["CUDA_VISIBLE_DEVICES"] == "4,6"
    assert "--num-gpus=0" in cpu_cmd and "CUDA_VISIBLE_DEVICES" not in cpu_env
    assert ctcluster.build_parser().parse_args(["up"]).gpus == 0
    assert ctcluster.main(["up", "--workers", "0", "--gpus", "1"]) == 2


def test_worker_nodes_join_with_rays_own_cli_through_an_address_it_keeps(tmp_path, monkeypatch):
    """A worker is plain `ray start` (no wrapper, no patched Ray). On loopback it is told the head
    as 127.1, which Ray does not rewrite to the primary address, with no node address of its own
    (Ray derives 127.0.0.1 from the route) and gRPC's native resolver, which reads that form.
    A routable bind host is passed through as given."""
    spawned = []
    monkeypatch.setattr(raynodes, "spawn", lambda *a: spawned.append(a) or {})
    monkeypatch.setattr(raynodes, "free_port", lambda host: 40000)  # 10.1.2.3 is not ours
    raynodes.start_worker(tmp_path, "127.0.0.1", "127.0.0.1:6390", 1, 1.0, 256)
    raynodes.start_worker(tmp_path, "10.1.2.3", "10.1.2.3:6390", 2, 1.0, 256)
    (_, local_cmd, _, local_env), (_, routed_cmd, _, routed_env) = spawned
    for cmd, env in ((local_cmd, local_env), (routed_cmd, routed_env)):
        assert cmd[:3] == [str(Path(sys.executable).parent / "ray"), "start", "--block"]
        assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"  # Ray's condition for joining
    assert "--address=127.1:6390" in local_cmd
    assert not any(a.startswith("--node-ip-address") for a in local_cmd)
    assert local_env["GRPC_DNS_RESOLVER"] == "native"
    assert {"--address=10.1.2.3:6390", "--node-ip-address=10.1.2.3"} <= set(routed_cmd)
    assert "GRPC_DNS_RESOLVER" not in routed_env
    assert raynodes.join_address("localhost:7000") == "127.1:7000"


def test_local_cluster_env_turns_token_auth_on_and_telemetry_off(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "inherited-token-must-not-win")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    env = clusterstate.child_env(tmp_path)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "auth_token")
    assert "RAY_AUTH_TOKEN" not in env and "RAY_ADDRESS" not in env
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DO_NOT_TRACK"] == "true"


def test_local_cluster_state_keeps_the_token_private_and_out_of_git(tmp_path):
    state = tmp_path / "state"
    token = clusterstate.ensure_state(state)
    assert oct(token.stat().st_mode & 0o777) == "0o600"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert (state / ".gitignore").read_text().strip().endswith("*")
    first = token.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert clusterstate.ensure_state(state).read_text() == first  # not regenerated
    env_file = clusterstate.write_env_file(
        state,
        {
            "ray": {"address": "127.0.0.1:6390", "dashboard_url": "http://127.0.0.1:8275"},
            "mlflow": {"uri": "http://127.0.0.1:5050"},
        },
    )
    text = env_file.read_text()
    assert first not in text
    assert "export RAY_AUTH_MODE=token" in text and "MLFLOW_TRACKING_URI=http://127.0.0" in text
    default = REPO / "cluster" / ".state" / "auth_token"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(default)], cwd=REPO)
    assert ignored.returncode == 0


def test_default_ports_avoid_rays_worker_port_range():
    # `ray start` rejects fixed ports inside its worker range (10002-19999 by default).
    for name, port in ctcluster.DEFAULT_PORTS.items():
        assert not 10002 <= port <= 19999, name
