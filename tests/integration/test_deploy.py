"""deploy/: the systemd unit, the Docker image and the Kubernetes manifests, checked offline.

Each part is read by the real tool where one runs without a server (``systemd-analyze``,
BuildKit's Dockerfile parser, ``kubectl kustomize``, Kubernetes' own JSON schemas through
``kubernetes-validate``), and the settings the parts must agree on (user id, port, config
path, secrets) are checked across them. The image build itself needs a Docker daemon: set
RUNWATCH_TEST_DOCKER=1 to run it.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runwatch.config import (
    RundirSource,
    WandbSource,
    default_rules_path,
    load_all,
    load_config,
    load_rules,
)

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "runwatch.service"
DOCKERFILE = REPO / "Dockerfile"
KUBE = REPO / "deploy" / "kubernetes"
KUBE_HA = REPO / "deploy" / "kubernetes-ha"  # an overlay of KUBE: replicas on PostgreSQL
KUBE_VERSION = "1.30.0"  # the schemas the manifests are validated against
RUNWATCH = Path(sys.executable).with_name("runwatch")
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl is not installed")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                           reason="systemd-analyze is not installed")


# --- systemd ------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """``[Section] Key=value`` lines; a key may repeat (Environment=, SystemCallFilter=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def seconds(value: str) -> float:
    """A systemd time span of one unit: ``10min``, ``15``, ``90s``."""
    number, unit = re.fullmatch(r"(\d+)\s*(min|s|h)?", value).groups()
    return float(number) * {"min": 60, "s": 1, "h": 3600, None: 1}[unit]


@pytest.fixture
def testable_unit(tmp_path) -> Path:
    """The unit as verify can check it here: ExecStart on the venv's runwatch (verify wants
    the binary to exist) and the commented-out LoadCredential= lines switched on."""
    text = UNIT.read_text().replace("/usr/local/bin/runwatch", str(RUNWATCH))
    text = re.sub(r"^#(LoadCredential=)", r"\1", text, flags=re.M)
    unit = tmp_path / "runwatch.service"
    unit.write_text(text)
    return unit


def verify(unit: Path) -> list[str]:
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    about_unit = [line for line in (done.stdout + done.stderr).splitlines()
                  if unit.name in line or str(unit.parent) in line]
    if done.returncode:
        about_unit.append(f"exit status {done.returncode}")
    return about_unit


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing(testable_unit):
    assert "LoadCredential=slack-token" in testable_unit.read_text()
    assert verify(testable_unit) == []


@needs_systemd_analyze
def test_systemd_analyze_verify_would_report_a_mistake(testable_unit):
    """The check above can fail: a misspelt setting is reported."""
    text = testable_unit.read_text().replace("ProtectHome=", "ProtectHomes=")
    testable_unit.write_text(text)
    assert any("ProtectHomes" in line for line in verify(testable_unit))


@needs_systemd_analyze
def test_sandbox_exposure_is_low(testable_unit):
    done = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(testable_unit)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0  # systemd's scale: 0 (tight) to 10 (none); "OK"


def test_unit_settings():
    service = unit_settings(UNIT.read_text())["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["Type"] == "notify"
    assert one["ExecStart"] == (
        "/usr/local/bin/runwatch run --config /etc/runwatch/runwatch.yaml --log-format json")
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Restart"] == "on-failure"
    assert one["TimeoutStopSec"] == "15"
    assert one["DynamicUser"] == "yes"
    assert one["StateDirectory"] == "runwatch"
    assert one["ConfigurationDirectory"] == "runwatch"
    assert one["ProtectSystem"] == "strict"
    assert one["ProtectHome"] == "read-only"
    assert one["NoNewPrivileges"] == one["PrivateTmp"] == one["LockPersonality"] == "yes"
    assert one["CapabilityBoundingSet"] == ""
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "@system-service" in service["SystemCallFilter"]
    assert one["EnvironmentFile"] == "-/etc/runwatch/env"  # optional: '-'


def test_watchdog_outlasts_the_longest_default_tick():
    """WATCHDOG=1 comes once a tick; a tick starts every `interval` and may take up to its
    `tick_timeout`. The watchdog must not fire between two healthy ticks."""
    wandb = WandbSource(type="wandb", entity="e", projects="all")
    rundir = RundirSource(type="rundir", path="/x")
    longest = max(wandb.interval + wandb.tick_timeout, rundir.interval)
    watchdog = seconds(unit_settings(UNIT.read_text())["Service"]["WatchdogSec"][-1])
    assert watchdog >= 2 * longest


def test_credentials_directory_secret_files_load(tmp_path):
    """The README's LoadCredential= recipe: ${CREDENTIALS_DIRECTORY} is expanded before
    the *_file is read, and the absolute path is used as is."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "slack-token").write_text("xoxb-from-systemd\n")
    (credentials / "wandb-api-key").write_text("wandb-key")
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    config = config_dir / "runwatch.yaml"
    config.write_text(
        "sources:\n"
        "  - {type: wandb, entity: e, projects: all,\n"
        "     api_key_file: '${CREDENTIALS_DIRECTORY}/wandb-api-key'}\n"
        "store: sqlite:////var/lib/runwatch/state.db\n"
        "receivers:\n"
        "  - name: team-slack\n"
        "    slack: {token_file: '${CREDENTIALS_DIRECTORY}/slack-token', channel: '#a'}\n")
    loaded = load_config(config, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert loaded.receivers[0].slack.token.get_secret_value() == "xoxb-from-systemd"
    assert loaded.sources[0].api_key.get_secret_value() == "wandb-key"
    assert loaded.sqlite_path == Path("/var/lib/runwatch/state.db")


# --- the documented install, run ------------------------------------------------------------

# Where each document's systemd install steps are: its first ```bash block after the heading.
INSTALL_DOCS = [("deploy/systemd/README.md", "## Install"), ("README.md", "### systemd")]
SERVICE_MANAGER = {"systemctl", "journalctl"}  # needs a running systemd: not run here
RUN_AS_THEY_ARE = {"install", "ln", "mkdir", "chmod", "sh"}  # paths moved, nothing else


def install_steps(markdown: str, heading: str) -> list[list[str]]:
    """The commands of the first ``bash`` block after ``heading``, as argv lists: comments
    dropped, ``&&`` chains split."""
    section = markdown.split(f"\n{heading}\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    steps: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            steps.append(words[:end])
            words = words[end + 1:]
    return steps


def moved(word: str, root: Path) -> str:
    """``word`` with the absolute paths an install writes to moved under ``root``."""
    return re.sub(r"(?<![\w./])/(etc|opt|usr|var)/", rf"{root}/\1/", word)


def fill_in_secrets(env_file: Path) -> None:
    """What the administrator types into the environment file: a value for every name."""
    lines = []
    for line in env_file.read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and not line.startswith("#") and not value:
            value = "xoxb-1-2-bot" if name == "SLACK_BOT_TOKEN" else f"test-{name.lower()}"
        lines.append(f"{name}{equals}{value}" if equals else line)
    env_file.write_text("\n".join(lines) + "\n")


def run_install(steps: list[list[str]], root: Path, *, edit_env: bool = True,
                ) -> list[subprocess.CompletedProcess]:
    """Run ``steps`` as an administrator would, in a copy of the file system under ``root``:
    ``sudo`` dropped, absolute paths moved, the test's own venv standing in for the one
    created and installed into, ``sudoedit`` filling in the environment file (the config
    is used as it ships). Returns what each ``runwatch validate`` said."""
    for directory in ("etc/systemd/system", "usr/local/bin"):  # there on any system
        (root / directory).mkdir(parents=True)
    env = {"PATH": f"{root}/usr/local/bin:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8"}
    validated = []
    for argv in steps:
        argv = [moved(word, root) for word in (argv[1:] if argv[0] == "sudo" else argv)]
        name = Path(argv[0]).name
        if name in SERVICE_MANAGER or name == "pip":
            continue
        if argv[:3] == ["python3", "-m", "venv"]:
            (Path(argv[3]) / "bin").mkdir(parents=True)
            (Path(argv[3]) / "bin" / "runwatch").symlink_to(RUNWATCH)
        elif name == "sudoedit":
            if Path(argv[1]).name == "env" and edit_env:
                fill_in_secrets(Path(argv[1]))
        elif "runwatch validate" in " ".join(argv):
            validated.append(subprocess.run(argv, cwd=REPO, env=env, capture_output=True,
                                            text=True, timeout=120))
        else:
            assert name in RUN_AS_THEY_ARE, f"a step this test cannot run yet: {argv}"
            subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True,
                           timeout=60)
    return validated


@pytest.mark.parametrize(("doc", "heading"), INSTALL_DOCS)
def test_the_documented_install_validates(doc, heading, tmp_path):
    steps = install_steps((REPO / doc).read_text(), heading)
    (validated,) = run_install(steps, tmp_path)
    assert (validated.returncode, validated.stderr) == (0, "")
    assert validated.stdout == (
        "ok: 9 rules, sources: rundir, wandb:my-team, receivers: team-slack, oncall-email,"
        " store: sqlite:////var/lib/runwatch/state.db\n")
    etc = tmp_path / "etc"
    assert (etc / "runwatch" / "env").stat().st_mode & 0o777 == 0o600  # holds secrets
    assert (etc / "systemd" / "system" / "runwatch.service").read_bytes() == UNIT.read_bytes()
    installed = etc / "runwatch" / "runwatch.yaml"
    assert installed.read_bytes() == (REPO / "config" / "runwatch.example.yaml").read_bytes()
    # What the unit runs is what was validated.
    exec_start = unit_settings(UNIT.read_text())["Service"]["ExecStart"][-1]
    assert "--config /etc/runwatch/runwatch.yaml" in exec_start
    assert unit_settings(UNIT.read_text())["Service"]["EnvironmentFile"] == [
        "-/etc/runwatch/env"]


def test_the_documented_validate_would_report_a_mistake(tmp_path):
    """The check above can fail: the environment file left as it ships is refused, every
    empty secret at once, each at its line."""
    doc, heading = INSTALL_DOCS[0]
    (validated,) = run_install(install_steps((REPO / doc).read_text(), heading), tmp_path,
                               edit_env=False)
    assert validated.returncode == 2
    config = tmp_path / "etc" / "runwatch" / "runwatch.yaml"
    errors = validated.stderr.splitlines()
    assert [line.partition(": ")[2] for line in errors] == [
        "sources[1].api_key: must not be empty",
        "receivers[0].slack.token: must not be empty",
        "receivers[1].email.password: must not be empty",
    ]
    assert all(line.startswith(f"{config}:") for line in errors)


# --- Docker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile_stages() -> list[list]:
    """The Dockerfile's instructions, as BuildKit's parser reads them, split by FROM."""
    dockerfile = pytest.importorskip("dockerfile")
    stages: list[list] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def build_args() -> dict[str, str]:
    """Every ``ARG NAME=default`` of the Dockerfile."""
    found = re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.M)
    return dict(found)


def substitute(value: str) -> str:
    args = build_args()
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)


def instructions(stage: list, name: str) -> list:
    return [c for c in stage if c.cmd == name]


def dockerfile_uid(stages) -> int:
    (user,) = instructions(stages[-1], "USER")
    return int(substitute(user.value[0]).partition(":")[0])


def test_image_is_built_in_one_stage_and_run_from_another(dockerfile_stages):
    build, runtime = dockerfile_stages
    assert substitute(build[0].value[0]) == substitute(runtime[0].value[0]) == (
        "python:3.11-slim")
    assert build[0].value[1:] == ("AS", "build")
    assert any("pip wheel" in c.value[0] for c in instructions(build, "RUN"))
    installs = [c for c in instructions(runtime, "RUN") if "pip install" in c.value[0]]
    assert installs and "--no-index" in installs[0].value[0]
    assert "from=build" in installs[0].flags[0]
    # No source tree in the runtime image: it copies nothing.
    assert not instructions(runtime, "COPY") and not instructions(runtime, "ADD")


def test_image_runs_as_a_fixed_non_root_user(dockerfile_stages):
    assert dockerfile_uid(dockerfile_stages) == 10001


def test_image_entrypoint_volume_port_and_healthcheck(dockerfile_stages):
    runtime = dockerfile_stages[-1]
    (entrypoint,) = instructions(runtime, "ENTRYPOINT")
    (cmd,) = instructions(runtime, "CMD")
    assert entrypoint.json and entrypoint.value == ("runwatch",)
    assert cmd.json and cmd.value == ("run", "--config", "/etc/runwatch/runwatch.yaml")
    assert instructions(runtime, "VOLUME")[0].value == ("/var/lib/runwatch",)
    assert instructions(runtime, "EXPOSE")[0].value == ("9465",)
    (check,) = instructions(runtime, "HEALTHCHECK")
    assert check.value[:3] == ("CMD", "python", "-c")
    assert "http://127.0.0.1:9465/healthz" in check.value[3]


def test_build_context_keeps_what_the_build_copies():
    """Every COPY source of the build stage exists and .dockerignore does not drop it;
    the bulky and private parts of the tree are dropped."""
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), flags=re.M)
    sources = [s for line in copied for s in line.split()]
    assert sources == ["pyproject.toml", "setup.py", "README.md", "daemon"]
    for source in sources:
        assert (REPO / source).exists()
        assert source not in ignored
    assert {".git", ".venv", ".fixture-cache", "tests", "**/__pycache__"} <= ignored


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), type("Handler", (_Health,), {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_tells_healthy_from_unhealthy(dockerfile_stages, health_server,
                                                          status, healthy):
    """The HEALTHCHECK's own command, run against a server answering /healthz."""
    (check,) = instructions(dockerfile_stages[-1], "HEALTHCHECK")
    _, *argv = check.value
    port = health_server.server_address[1]
    argv[-1] = argv[-1].replace("127.0.0.1:9465", f"127.0.0.1:{port}")
    health_server.RequestHandlerClass.status = status
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, timeout=30)
    assert (done.returncode == 0) is healthy


def test_healthcheck_fails_when_nothing_listens(dockerfile_stages, health_server):
    (check,) = instructions(dockerfile_stages[-1], "HEALTHCHECK")
    port = health_server.server_address[1]
    health_server.shutdown()
    health_server.server_close()
    code = check.value[-1].replace("127.0.0.1:9465", f"127.0.0.1:{port}")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                          timeout=30).returncode != 0


def docker_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(os.environ.get("RUNWATCH_TEST_DOCKER") != "1",
                    reason="builds the image (minutes): set RUNWATCH_TEST_DOCKER=1")
def test_image_builds_and_runs_as_its_user():
    if not docker_available():
        pytest.skip("no Docker daemon reachable")
    tag = "runwatch:test-deploy"
    subprocess.run(["docker", "build", "-t", tag, str(REPO)], check=True, timeout=1800)
    version = subprocess.run(["docker", "run", "--rm", tag, "--version"], capture_output=True,
                             text=True, check=True, timeout=120)
    assert version.stdout.startswith("runwatch ")
    uid = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert uid.stdout.strip() == "10001"


# --- Kubernetes ---------------------------------------------------------------------------


def kustomization(directory: Path = KUBE) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def kustomize(directory: Path) -> list[dict]:
    """What ``kubectl apply -k directory`` would apply, rendered by kubectl's kustomize."""
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """Every object of the kustomization's resources, by kind."""
    objects: dict[str, dict] = {}
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((KUBE / name).read_text()):
            assert doc["kind"] not in objects, f"a second {doc['kind']} in {name}"
            objects[doc["kind"]] = doc
    return objects


def container(manifests) -> dict:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("directory", [KUBE, KUBE_HA], ids=["base", "ha"])
def test_every_yaml_file_is_in_the_kustomization(directory):
    """Each file is a resource or a patch of its kustomization; the base is the overlay's
    resource by its directory."""
    listed = kustomization(directory)
    files = {r for r in listed["resources"] if not r.startswith("../")}
    files |= {p["path"] for p in listed.get("patches", []) if "path" in p}
    assert {p.name for p in directory.glob("*.yaml")} == files | {"kustomization.yaml"}


def validate_strictly(docs) -> None:
    """Each manifest against Kubernetes' own schemas, offline. Strict: an unknown or
    misplaced field is an error, not silently dropped."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_manifests_match_the_kubernetes_schemas(manifests):
    assert set(manifests) == {
        "Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    validate_strictly(manifests.values())


def test_schema_validation_would_report_a_mistake(manifests):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = yaml.safe_load(yaml.safe_dump(manifests["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


@needs_kubectl
def test_kustomize_renders_into_the_namespace():
    rendered = kustomize(KUBE)
    assert sorted(d["kind"] for d in rendered) == [
        "ConfigMap", "Deployment", "Namespace", "PersistentVolumeClaim", "Service"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "runwatch"
    (deployment,) = (d for d in rendered if d["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "runwatch:0.1.0"


def test_one_pod_at_a_time_for_sqlite(manifests):
    spec = manifests["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_pod_security(manifests, dockerfile_stages):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid(dockerfile_stages)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = container(manifests)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    labels = manifests["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_resources_probes_and_ports(manifests, dockerfile_stages):
    main = container(manifests)
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][part])
    (port,) = main["ports"]
    (exposed,) = instructions(dockerfile_stages[-1], "EXPOSE")
    assert port["containerPort"] == int(exposed.value[0])
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_writable_places_on_a_read_only_root(manifests):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(manifests)["volumeMounts"]}
    env = {e["name"]: e for e in container(manifests)["env"]}
    home = env["HOME"]["value"]
    for path in ("/tmp", home):
        assert "emptyDir" in volumes[mounts[path]["name"]]
        assert not mounts[path].get("readOnly")
    state = volumes[mounts["/var/lib/runwatch"]["name"]]
    claim = state["persistentVolumeClaim"]["claimName"]
    assert claim == manifests["PersistentVolumeClaim"]["metadata"]["name"]


def test_config_is_mounted_as_a_directory_of_the_configmap(manifests):
    """No subPath: a ConfigMap update reaches the pod as the ..data link swap only when the
    whole volume is mounted."""
    main = container(manifests)
    config_path = Path(main["args"][main["args"].index("--config") + 1])
    (mount,) = (m for m in main["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert mount["readOnly"] is True and "subPath" not in mount
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    assert "items" not in volume["configMap"]  # every key, rule files added later too
    assert config_path.name in manifests["ConfigMap"]["data"]
    assert "--watch-config" in main["args"]


def test_service_scrapes_the_metrics_port(manifests):
    service = manifests["Service"]
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9465 and port["targetPort"] == container(manifests)["ports"][0][
        "name"]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9465"
    assert annotations["prometheus.io/path"] == "/metrics"


def project_like_kubelet(data: dict[str, str], directory: Path) -> None:
    """A ConfigMap volume as the kubelet writes it: the files in a timestamped directory,
    ``..data`` linking to it, and each key a link through ``..data``."""
    payload = directory / "..2026_01_01_00_00_00.000000001"
    payload.mkdir(parents=True)
    for key, text in data.items():
        (payload / key).write_text(text)
    (directory / "..data").symlink_to(payload.name)
    for key in data:
        (directory / key).symlink_to(Path("..data") / key)


def mounted_config(manifests, tmp_path, **values):
    """The ConfigMap's runwatch.yaml loaded as the pod reads it (mounted as the kubelet
    mounts it), every ${VAR} it uses set by the Deployment (to "x", or as ``values``)."""
    data = manifests["ConfigMap"]["data"]
    mount = tmp_path / "etc-runwatch"
    project_like_kubelet(data, mount)
    env = {e["name"] for e in container(manifests)["env"]}
    referenced = set(re.findall(r"\$\{(\w+)", data["runwatch.yaml"]))
    assert referenced <= env, "every ${VAR} the config uses is set in the Deployment"
    return load_all(mount / "runwatch.yaml", env={name: "x" for name in env} | values)


def test_configmap_holds_a_valid_config_and_rules(manifests, tmp_path):
    config, rules = mounted_config(manifests, tmp_path)
    assert config.http.listen == "0.0.0.0:9465"
    assert config.sqlite_path == Path("/var/lib/runwatch/state.db")
    # The seed rules are all there, read once (not a second time through ..data).
    shipped = load_rules([default_rules_path()], tmp_path)
    assert {r.name for r in shipped.rules} <= {r.name for r in rules.rules}
    assert len({r.name for r in rules.rules}) == len(rules.rules)


def test_secrets_come_from_the_secret(manifests):
    env = {e["name"]: e for e in container(manifests)["env"]}
    for name in ("WANDB_API_KEY", "SLACK_BOT_TOKEN"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "runwatch-secrets"
    # The Secret is made by hand (kustomization.yaml says how), never applied with
    # placeholder values over the real ones.
    assert "Secret" not in manifests
    documented = kustomization_text()
    for name in ("WANDB_API_KEY", "SLACK_BOT_TOKEN"):
        key = env[name]["valueFrom"]["secretKeyRef"]["key"]
        assert f"--from-literal={key}=" in documented


def kustomization_text() -> str:
    return (KUBE / "kustomization.yaml").read_text()


# --- Kubernetes: two replicas on one PostgreSQL store (deploy/kubernetes-ha) ----------------

STORE_URL = "postgresql://runwatch:pw@postgres.example.com:5432/runwatch?schema=runwatch"


@pytest.fixture(scope="module")
def ha_manifests() -> dict[str, dict]:
    """Every object the overlay renders to, by kind."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    objects: dict[str, dict] = {}
    for doc in kustomize(KUBE_HA):
        assert doc["kind"] not in objects, f"a second {doc['kind']}"
        objects[doc["kind"]] = doc
    return objects


def test_ha_overlay_builds_on_the_base():
    assert "../kubernetes" in kustomization(KUBE_HA)["resources"]
    assert kustomization(KUBE_HA)["namespace"] == kustomization()["namespace"]


def test_ha_manifests_match_the_kubernetes_schemas(ha_manifests):
    # The state is in PostgreSQL: the SQLite volume's claim is gone.
    assert set(ha_manifests) == {
        "Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    validate_strictly(ha_manifests.values())
    for doc in ha_manifests.values():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "runwatch"


def test_ha_runs_two_replicas_on_different_nodes(ha_manifests):
    spec = ha_manifests["Deployment"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    # The lease fences every write: pods may overlap, a rollout keeps one up.
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti  # one node still runs
    budget = ha_manifests["PodDisruptionBudget"]["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["selector"] == spec["selector"]


def test_ha_replicas_are_named_by_their_pod_and_stay_ready_as_standbys(ha_manifests):
    main = container(ha_manifests)
    env = {e["name"]: e for e in main["env"]}
    assert env["RUNWATCH_REPLICA"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # A standby answers /readyz with 200: both pods are ready, and both are scraped.
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_ha_keeps_no_state_on_a_volume(ha_manifests):
    pod = ha_manifests["Deployment"]["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    mounts = {m["mountPath"] for m in container(ha_manifests)["volumeMounts"]}
    assert "/var/lib/runwatch" not in mounts
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in container(ha_manifests)["volumeMounts"]} <= volumes


def test_ha_store_url_comes_from_the_secret(ha_manifests):
    env = {e["name"]: e for e in container(ha_manifests)["env"]}
    for name in ("RUNWATCH_STORE_URL", "WANDB_API_KEY", "SLACK_BOT_TOKEN"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "runwatch-secrets"
    # Made by hand, as the base's: never applied with a placeholder over the real one.
    assert "Secret" not in ha_manifests
    documented = (KUBE_HA / "kustomization.yaml").read_text()
    for e in env.values():
        if "secretKeyRef" in e.get("valueFrom", {}):
            assert f"--from-literal={e['valueFrom']['secretKeyRef']['key']}=" in documented


def test_ha_configmap_holds_a_valid_config_on_postgresql(ha_manifests, tmp_path):
    config, rules = mounted_config(ha_manifests, tmp_path, RUNWATCH_STORE_URL=STORE_URL)
    assert config.store == STORE_URL and config.sqlite_path is None
    assert config.ha.lease_ttl == 30
    assert config.http.listen == "0.0.0.0:9465"
    assert {r.name for r in load_rules([default_rules_path()], tmp_path).rules} <= {
        r.name for r in rules.rules}


def test_ha_config_is_the_base_s_but_for_the_store(ha_manifests, manifests):
    """The overlay replaces runwatch.yaml whole: it must not drift from the base's."""
    base = yaml.safe_load(manifests["ConfigMap"]["data"]["runwatch.yaml"])
    ha = yaml.safe_load(ha_manifests["ConfigMap"]["data"]["runwatch.yaml"])
    assert ha.pop("store") == "${RUNWATCH_STORE_URL}"
    assert ha.pop("ha") == {"lease_ttl": "30s"}
    base.pop("store")
    assert ha == base
    # The rule files are the base's.
    rules = {k: v for k, v in manifests["ConfigMap"]["data"].items() if k != "runwatch.yaml"}
    assert rules.items() <= ha_manifests["ConfigMap"]["data"].items()


# --- across the parts ---------------------------------------------------------------------


def test_every_deployment_reads_the_same_config_path(dockerfile_stages, manifests):
    systemd = unit_settings(UNIT.read_text())["Service"]["ExecStart"][-1].split()
    (cmd,) = instructions(dockerfile_stages[-1], "CMD")
    kube = container(manifests)["args"]
    paths = {args[list(args).index("--config") + 1] for args in (systemd, cmd.value, kube)}
    assert paths == {"/etc/runwatch/runwatch.yaml"}
