"""Every shipped deployment file is checked: the kustomize base, compose, the Dockerfile.

Statically, here: manifests are rendered with `kubectl kustomize` and validated offline against
the Kubernetes schemas (strict: unknown fields are errors). The image and the compose stack
are also built and run for real by deploy/smoke.sh, which .ci/run calls after these tests;
the checks at the end of this file keep what that script relies on in place.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.support.processes import REPO
from tests.support.topologies import AOF

K8S_VERSION = "1.32"


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` substitution, with `env` (default: none set)."""
    env = env or {}
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m[1]) or (m[2] or ""), value)


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is required under CI=true")
        pytest.skip("kubectl not installed")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(REPO / "deploy/k8s")], capture_output=True, text=True, check=True
    ).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered)}


def container(manifests, kind="Deployment", name="grok-gateway") -> dict:
    return manifests[(kind, name)]["spec"]["template"]["spec"]["containers"][0]


def test_every_manifest_validates_strictly_against_the_schemas(manifests):
    assert len(manifests) >= 10
    for doc in manifests.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field(manifests):
    broken = copy.deepcopy(manifests[("Deployment", "grok-gateway")])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_probes_hit_the_apps_health_paths_on_its_port(manifests):
    gateway = container(manifests)
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports["http"] == Settings().port == 8000
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = manifests[("Service", "grok-gateway")]["spec"]
    assert service["ports"][0]["targetPort"] == "http"


def test_deployment_runs_at_least_two_hardened_replicas_with_resources(manifests):
    deployment = manifests[("Deployment", "grok-gateway")]["spec"]
    assert deployment["replicas"] >= 2
    gateway = container(manifests)
    assert set(gateway["resources"]) == {"requests", "limits"}
    security = gateway["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert deployment["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert deployment["template"]["spec"]["topologySpreadConstraints"]


def test_grace_period_covers_the_drain_delay_and_the_stream_grace(manifests):
    config = manifests[("ConfigMap", "grok-gateway-config")]["data"]
    pod = manifests[("Deployment", "grok-gateway")]["spec"]["template"]["spec"]
    pre_stop = container(manifests)["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + float(config["GATEWAY_DRAIN_DELAY_SECONDS"])
    needed += float(config["GATEWAY_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > needed


def test_configmap_settings_are_ones_the_app_reads_and_valid():
    source = (REPO / "service/settings.py").read_text()
    config = yaml.safe_load((REPO / "deploy/k8s/configmap.yaml").read_text())["data"]
    for name in config:
        assert f'"{name}"' in source, name
    Settings.from_env({**config, "XAI_API_KEY": "k"})  # parses without ConfigError


def test_keys_file_path_matches_the_secret_mount(manifests):
    config = manifests[("ConfigMap", "grok-gateway-config")]["data"]
    mount = next(m for m in container(manifests)["volumeMounts"] if m["name"] == "keys")
    assert config["GATEWAY_KEYS_FILE"] == mount["mountPath"] + "/keys.toml"
    secret = manifests[("Secret", "grok-gateway-keys")]["stringData"]["keys.toml"]
    from service.registry.keys import parse_registry

    assert len(parse_registry(secret.encode())) == 1


def test_hpa_and_pdb_target_the_gateway(manifests):
    hpa = manifests[("HorizontalPodAutoscaler", "grok-gateway")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "grok-gateway",
    }
    assert hpa["minReplicas"] >= 2
    pdb = manifests[("PodDisruptionBudget", "grok-gateway")]["spec"]
    labels = manifests[("Deployment", "grok-gateway")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()


def test_only_gateway_pods_reach_redis(manifests):
    policy = manifests[("NetworkPolicy", "grok-gateway-redis")]["spec"]
    redis_labels = manifests[("StatefulSet", "grok-gateway-redis")]["spec"]["template"]
    assert policy["podSelector"]["matchLabels"] == redis_labels["metadata"]["labels"]
    (rule,) = policy["ingress"]
    gateway_labels = manifests[("Deployment", "grok-gateway")]["spec"]["template"]["metadata"]
    assert rule["from"] == [{"podSelector": {"matchLabels": gateway_labels["labels"]}}]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    config = manifests[("ConfigMap", "grok-gateway-config")]["data"]
    assert "grok-gateway-redis:6379" in config["REDIS_URL"]


def redis_options(args: list[str]) -> dict[str, str]:
    """`redis-server --name value ...` arguments as a dict (without the binary's name)."""
    options: dict[str, list[str]] = {}
    values: list[str] = []
    for arg in args[1:] if args[0] == "redis-server" else args:
        if arg.startswith("--"):
            values = options.setdefault(arg[2:], [])
        else:
            values.append(arg)
    return {name: " ".join(values) for name, values in options.items()}


def test_redis_money_settings_are_the_ones_the_persistence_test_runs():
    """tests/integration/test_redis_persistence.py kills and restarts a Redis with AOF:
    the shipped files must run that configuration."""
    tested = redis_options(list(AOF))
    assert tested == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
    }


def test_k8s_redis_is_append_only_on_a_volume_claim_and_never_evicts(manifests):
    redis = manifests[("StatefulSet", "grok-gateway-redis")]["spec"]
    options = redis_options(container(manifests, "StatefulSet", "grok-gateway-redis")["args"])
    assert redis_options(list(AOF)).items() <= options.items()
    assert re.fullmatch(r"\d+mb", options["maxmemory"])
    (claim,) = redis["volumeClaimTemplates"]
    mount = next(
        m
        for m in container(manifests, "StatefulSet", "grok-gateway-redis")["volumeMounts"]
        if m["name"] == claim["metadata"]["name"]
    )
    assert mount["mountPath"] == options["dir"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert redis["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    pod = redis["template"]["spec"]
    assert not any(v.get("emptyDir") for v in pod.get("volumes", []))


def test_k8s_redis_has_probes_and_memory_above_its_maxmemory(manifests):
    redis = container(manifests, "StatefulSet", "grok-gateway-redis")
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(redis)
    assert "PONG" in " ".join(redis["readinessProbe"]["exec"]["command"])
    maxmemory = int(redis_options(redis["args"])["maxmemory"].removesuffix("mb"))
    limit = redis["resources"]["limits"]["memory"]
    mebibytes = int(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    assert mebibytes >= 2 * maxmemory  # the rewrite's fork copies pages as they change


def test_k8s_redis_talks_to_nothing(manifests):
    policy = manifests[("NetworkPolicy", "grok-gateway-redis")]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"] == []


# --- compose ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_builds_from_this_repo_and_runs_its_modules(compose):
    services = compose["services"]
    assert {"redis", "simulator", "gateway-1", "gateway-2", "lb"} <= set(services)
    for name in ("simulator", "gateway-1", "gateway-2"):
        # The base image is passed through only when set: the Dockerfile's default otherwise.
        assert services[name]["build"] == {"context": ".", "args": ["PYTHON_IMAGE"]}
        assert interpolate(services[name]["image"]) == "grok-gateway:local"
    assert (REPO / "Dockerfile").exists()
    assert services["simulator"]["entrypoint"] == ["python", "-m", "service.simulator"]
    assert (REPO / "service/simulator/__main__.py").exists()


def test_compose_replicas_share_redis_and_use_the_simulator(compose):
    services = compose["services"]
    sim_port = services["simulator"]["command"][
        services["simulator"]["command"].index("--port") + 1
    ]
    for name in ("gateway-1", "gateway-2"):
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["XAI_BASE_URL"] == f"http://simulator:{sim_port}/v1"
        Settings.from_env({**env})  # every value is valid
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_load_balancer_publishes_the_gateway_port(compose):
    lb = compose["services"]["lb"]
    assert [interpolate(p) for p in lb["ports"]] == ["8000:8000"]
    assert interpolate(lb["ports"][0], {"LB_PORT": "127.0.0.1:18000"}) == "127.0.0.1:18000:8000"
    conf = (REPO / "deploy/compose/nginx.conf").read_text()
    assert "server gateway-1:8000;" in conf and "server gateway-2:8000;" in conf
    assert "proxy_buffering off;" in conf


def test_compose_load_balancer_keeps_the_clients_request_id():
    conf = (REPO / "deploy/compose/nginx.conf").read_text()
    mapping = re.search(r"map \$http_x_request_id \$(\w+) \{(.*?)\}", conf, re.S)
    assert mapping, "X-Request-ID: the client's, else nginx's own"
    assert re.search(r"default\s+\$http_x_request_id;", mapping[2])
    assert re.search(r'""\s+\$request_id;', mapping[2])
    assert f"proxy_set_header X-Request-ID ${mapping[1]};" in conf


def test_compose_images_default_to_todays_and_can_be_replaced(compose):
    services = compose["services"]
    assert interpolate(services["redis"]["image"]) == "redis:7.4-alpine"
    assert interpolate(services["lb"]["image"]) == "nginx:1.27-alpine"
    env = {"REDIS_IMAGE": "r:1", "NGINX_IMAGE": "n:1", "GATEWAY_IMAGE": "g:1"}
    assert interpolate(services["redis"]["image"], env) == "r:1"
    assert interpolate(services["lb"]["image"], env) == "n:1"
    assert interpolate(services["gateway-1"]["image"], env) == "g:1"


def test_compose_runs_the_image_hardened_like_the_k8s_pod(compose, manifests):
    k8s = container(manifests)["securityContext"]
    assert k8s["readOnlyRootFilesystem"] and k8s["capabilities"]["drop"] == ["ALL"]
    k8s_tmp = next(m for m in container(manifests)["volumeMounts"] if m["name"] == "tmp")
    for name in ("simulator", "gateway-1", "gateway-2"):
        service = compose["services"][name]
        assert service["read_only"] is True
        assert service["tmpfs"] == [k8s_tmp["mountPath"]]
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_compose_stop_grace_covers_the_drain_delay_and_the_stream_grace(compose):
    gateway = compose["services"]["gateway-1"]
    settings = Settings.from_env(gateway["environment"])
    grace = re.fullmatch(r"(\d+)s", gateway["stop_grace_period"])
    assert int(grace[1]) > settings.drain_delay + settings.shutdown_grace


def test_compose_demo_key_file_matches_its_documented_secret(compose):
    mount = compose["services"]["gateway-1"]["volumes"][0]
    source = mount.split(":")[0]
    text = (REPO / source).read_text()
    secret = re.search(r"The demo key is:\s+(\S+)", text).group(1)
    assert hashlib.sha256(secret.encode()).hexdigest() in text


def test_compose_redis_is_append_only_on_a_named_volume_and_never_evicts(compose):
    redis = compose["services"]["redis"]
    options = redis_options(redis["command"])
    assert redis_options(list(AOF)).items() <= options.items()
    assert re.fullmatch(r"\d+mb", options["maxmemory"])
    (volume,) = redis["volumes"]
    name, path = volume.split(":")[:2]
    assert path == options["dir"] and name in compose["volumes"]


def test_the_smoke_redis_image_owns_the_volume_path():
    """A named volume starts as the image's directory: the stand-in's /data is redis's."""
    text = (REPO / "deploy/smoke/services.Dockerfile").read_text()
    redis_stage = text[text.index("AS redis") :]
    assert "chown redis:redis /data" in redis_stage and "WORKDIR /data" in redis_stage


# --- docs/redis.md: the Sentinel and Cluster recipes -------------------------------------


def redis_recipes() -> dict[str, dict]:
    """docs/redis.md's ```yaml blocks, by the file name on their first line (`# name`)."""
    text = (REPO / "docs/redis.md").read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)
    return {block.splitlines()[0].removeprefix("# "): yaml.safe_load(block) for block in blocks}


def test_redis_doc_has_a_compose_and_a_kubernetes_recipe_per_topology():
    assert set(redis_recipes()) == {
        "compose.sentinel.yaml",
        "redis-sentinel.yaml",
        "compose.cluster.yaml",
        "redis-cluster.yaml",
    }


@pytest.mark.parametrize(
    ("recipe", "scheme"),
    [("compose.sentinel.yaml", "redis+sentinel"), ("compose.cluster.yaml", "redis+cluster")],
)
def test_compose_recipes_persist_every_server_and_point_both_gateways_at_it(
    compose, recipe, scheme
):
    from service.redis.connection import connect_shared

    override = redis_recipes()[recipe]
    servers = {
        name: service
        for name, service in override["services"].items()
        if service.get("command", [""])[0] == "redis-server"
    }
    assert len(servers) == (1 if scheme == "redis+sentinel" else 6)
    for service in servers.values():
        options = redis_options(service["command"])
        assert redis_options(list(AOF)).items() <= options.items()
        (volume,) = service["volumes"]
        assert volume.split(":")[1] == options["dir"]
        assert volume.split(":")[0] in override["volumes"]
    for name in ("gateway-1", "gateway-2"):
        env = {**compose["services"][name]["environment"]}
        env.update(override["services"][name]["environment"])
        settings = Settings.from_env(env)
        assert settings.redis_url.startswith(f"{scheme}://")
        assert connect_shared(settings.redis_url) is not None  # a URL the gateway routes


@pytest.mark.parametrize(
    ("recipe", "config"),
    [("redis-sentinel.yaml", "commonConfiguration"), ("redis-cluster.yaml", "redis")],
)
def test_kubernetes_recipes_persist_and_never_evict(recipe, config):
    values = redis_recipes()[recipe]
    text = values[config] if isinstance(values[config], str) else values[config]["configmap"]
    lines = set(text.splitlines())
    assert {"appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"} <= lines
    assert any(line.startswith("maxmemory ") for line in lines)


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_is_multistage_pinned_non_root_and_runs_the_readme_command():
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    args = dict(
        line.split()[1].split("=", 1) for line in lines if line.startswith("ARG ") and "=" in line
    )
    bases = [interpolate(line.split()[1], args) for line in lines if line.startswith("FROM ")]
    assert len(bases) >= 2
    assert all(re.match(r"python:3\.11\.\d+-slim", b) for b in bases)
    user = next(line for line in lines if line.startswith("USER "))
    assert not user.split()[1].startswith(("root", "0"))
    assert "EXPOSE 8000" in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert 'ENTRYPOINT ["python", "-m", "service"]' in lines
    assert "python -m service --demo" in (REPO / "README.md").read_text()
    assert ".git" in (REPO / ".dockerignore").read_text().splitlines()


def test_dockerfile_base_is_an_argument_and_needs_no_frontend_image():
    text = (REPO / "Dockerfile").read_text()
    # No `# syntax=` line: BuildKit would pull a frontend image; the classic builder works.
    assert not re.search(r"^#\s*syntax=", text, re.M | re.I)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    assert "ENV PATH=/opt/venv/bin:$PATH" in text  # the base's own PATH is kept


def test_dockerfile_installs_dependencies_before_copying_the_source():
    """A code change rebuilds from `COPY service` on: the dependency layer is reused."""
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    deps = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    assert lines.index("COPY pyproject.toml ./") < deps < lines.index("COPY service ./service")
    assert not any(line.startswith("COPY") and "README" in line for line in lines[:deps])


# --- the real run: deploy/smoke.sh --------------------------------------------------------


def test_ci_runs_the_smoke_test_after_the_tests():
    commands = [
        line.strip()
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    pytest = next(i for i, c in enumerate(commands) if c.split()[0] == "pytest")
    assert commands.index("bash deploy/smoke.sh") > pytest
    assert "bash deploy/smoke.sh" in (REPO / "README.md").read_text()


def test_ci_runs_the_readme_test_command_then_the_benchmark_smoke_apart():
    import tomllib

    commands = [
        line.strip()
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    runs = [c.split("|")[0].split("2>")[0].split() for c in commands if c.split()[0] == "pytest"]
    assert runs == [["pytest"], ["pytest", "-n", "0", "tests/bench"]]
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "tests/bench" not in options["ini_options"]["testpaths"]


def test_smoke_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "deploy/smoke.sh")], check=True)


def test_readme_compose_curl_is_one_the_smoke_test_can_run(compose):
    """The smoke test runs the README's curl as written, on its own port."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Docker Compose") :]
    curl = re.search(r"^curl .*?[^\\]\n", section, re.M | re.S)[0]
    assert "http://localhost:8000/api/v1/chat/completions" in curl
    keys = (REPO / "deploy/compose/keys.toml").read_text()
    secret = re.search(r"The demo key is:\s+(\S+)", keys)[1]
    assert f"Bearer {secret}" in curl
    assert '"stream": true' in curl


def test_compose_demo_key_has_a_per_minute_rate_the_smoke_test_can_exhaust():
    import tomllib

    doc = tomllib.loads((REPO / "deploy/compose/keys.toml").read_text())
    (key,) = [k for k in doc["keys"] if k["id"] == "compose-demo"]
    rate = key.get("requests", doc["defaults"]["requests"])
    assert re.fullmatch(r"\s*\d+\s*/\s*(1\s*)?minute\s*", rate), rate


# --- the docs' Docker, compose and Kubernetes examples ----------------------------------------
# They need Docker or a cluster: deploy/smoke.sh runs the Docker and compose ones for real
# (CI runs it after pytest); these tests tie each example to what the smoke test runs.


def _deploy_examples() -> list:
    from tests.support.doc_examples import examples_in

    examples = examples_in("README.md") + examples_in("docs/deployment.md")
    return [e for e in examples if e.tested_by == "tests/integration/test_deploy.py"]


def test_every_compose_example_is_the_stack_the_smoke_test_runs_with_the_readme_curl():
    smoke = (REPO / "deploy/smoke.sh").read_text()
    compose = [e for e in _deploy_examples() if e.code.startswith("docker compose up")]
    assert len(compose) == 2  # the README's and docs/deployment.md's
    readme_curl = compose[0].code.split("\n", 1)[1]
    for example in compose:
        assert example.code.split("\n", 1)[1] == readme_curl  # the curl smoke.sh runs
    assert "dc up" in smoke or "compose up" in smoke


def test_the_docker_example_runs_the_image_as_the_smoke_test_does():
    smoke = (REPO / "deploy/smoke.sh").read_text()
    (docker,) = [e for e in _deploy_examples() if e.code.startswith("docker build")]
    run = docker.code.splitlines()[1].split()
    for flag in ("--read-only", "--cap-drop", "--tmpfs"):
        assert flag in run and flag in smoke
    assert run[-1] == "--demo"


def test_the_kubectl_example_creates_the_secrets_the_deployment_mounts():
    (kubectl,) = [e for e in _deploy_examples() if e.code.startswith("kubectl")]
    deployment = (REPO / "deploy/k8s/deployment.yaml").read_text()
    for secret in re.findall(r"create secret generic (\S+)", kubectl.code):
        assert secret in deployment
    assert "kubectl apply -k deploy/k8s" in kubectl.code
