"""The daemon config: one testdata file per error with its exact message, then the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

import platformdirs
import pytest

from runwatch import keys
from runwatch.config import (
    Config,
    ConfigError,
    Digest,
    default_config,
    default_rules_path,
    load_all,
    load_config,
)
from runwatch.config.document import expand

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "runwatch.example.yaml"

# file → every line of the error, exactly. {testdata} is the absolute testdata directory.
ERRORS = {
    "undefined-receiver.yaml": [
        'config/undefined-receiver.yaml:11: routes[0]: undefined receiver "pagerduty"'
        " used in route",
    ],
    "duplicate-receiver.yaml": [
        'config/duplicate-receiver.yaml:6: receivers[1]: receiver "team-slack" already'
        " defined at config/duplicate-receiver.yaml:4",
    ],
    "digest-undefined-receiver.yaml": [
        'config/digest-undefined-receiver.yaml:5: digest: undefined receiver "morning-mail"'
        " used in digest",
    ],
    "unknown-top-level-key.yaml": [
        "config/unknown-top-level-key.yaml:3: unknown field 'receviers'"
        " (did you mean 'receivers'?)",
    ],
    "unknown-source-type.yaml": [
        "config/unknown-source-type.yaml:2: sources[0]: unknown type 'rundirs'"
        " (expected one of rundir, wandb)",
    ],
    "missing-source-type.yaml": [
        "config/missing-source-type.yaml:2: sources[0]: missing required field 'type'"
        " (one of rundir, wandb)",
    ],
    "missing-sources.yaml": [
        "config/missing-sources.yaml:1: missing required field 'sources'",
    ],
    "wandb-missing-entity.yaml": [
        "config/wandb-missing-entity.yaml:2: sources[0]: missing required field 'entity'",
    ],
    "wandb-bad-projects.yaml": [
        "config/wandb-bad-projects.yaml:4: sources[0].projects: expected a list of project"
        " names, or: all",
    ],
    "bad-interval.yaml": [
        "config/bad-interval.yaml:4: sources[0].interval: invalid duration '5 fortnights':"
        " expected a number with a unit like 30s, 10m, 2h, 1d",
    ],
    "zero-interval.yaml": [
        "config/zero-interval.yaml:4: sources[0].interval: invalid duration '0s':"
        " must be more than zero",
    ],
    "bad-first-read.yaml": [
        "config/bad-first-read.yaml:4: sources[0].first_read: invalid first_read True: a"
        " number of rows ('10000 rows'), of steps ('50000 steps'), a duration ('6h') or 'all'",
        "config/bad-first-read.yaml:8: sources[1].first_read: invalid first_read 'lots': a"
        " number of rows ('10000 rows'), of steps ('50000 steps'), a duration ('6h') or 'all'",
    ],
    "bad-depth.yaml": [
        "config/bad-depth.yaml:4: sources[0].depth: expected an integer, got 'deep'",
    ],
    "duplicate-source-name.yaml": [
        "config/duplicate-source-name.yaml:3: sources[1]: source"
        " 'rundir' already defined at"
        " config/duplicate-source-name.yaml:2; give each source a distinct name",
    ],
    "unset-env.yaml": [
        "config/unset-env.yaml:6: receivers[0].slack.token: environment variable"
        " RUNWATCH_TEST_UNSET_TOKEN is not set",
    ],
    "bad-env-reference.yaml": [
        "config/bad-env-reference.yaml:3: sources[0].path: invalid variable reference"
        " '${1RUNS}': expected ${NAME} or ${NAME:-default}",
    ],
    "secret-file-missing.yaml": [
        "config/secret-file-missing.yaml:6: receivers[0].slack.token_file: cannot read secret"
        " file '{testdata}/config/secrets/no-such-token': No such file or directory",
    ],
    "secret-and-secret-file.yaml": [
        "config/secret-and-secret-file.yaml:7: receivers[0].webhook.bearer_token: give"
        " bearer_token or bearer_token_file, not both",
    ],
    "receiver-two-kinds.yaml": [
        "config/receiver-two-kinds.yaml:4: receivers[0]: receiver 'ops' needs exactly one of"
        " slack, email, webhook (got slack, webhook)",
    ],
    "receiver-no-kind.yaml": [
        "config/receiver-no-kind.yaml:4: receivers[0]: receiver 'ops' needs exactly one of"
        " slack, email, webhook",
    ],
    "slack-token-without-channel.yaml": [
        "config/slack-token-without-channel.yaml:5: receivers[0].slack: a token needs a"
        " channel",
    ],
    "email-bad-smtp.yaml": [
        "config/email-bad-smtp.yaml:6: receivers[0].email.smtp: invalid address"
        " 'smtp.example.com:smtp': port must be a number from 0 to 65535",
    ],
    "email-missing-from.yaml": [
        "config/email-missing-from.yaml:5: receivers[0].email: missing required field 'from'",
    ],
    "webhook-bad-url.yaml": [
        "config/webhook-bad-url.yaml:5: receivers[0].webhook.url: invalid URL"
        " 'hooks.example.com/runwatch': expected http:// or https://",
    ],
    "route-bad-continue.yaml": [
        "config/route-bad-continue.yaml:8: routes[0].continue: expected true or false,"
        " got 'maybe'",
    ],
    "route-no-receivers.yaml": [
        "config/route-no-receivers.yaml:5: routes[0].receivers: must not be empty",
    ],
    "inhibit-empty-source.yaml": [
        "config/inhibit-empty-source.yaml:4: inhibit[0].source: must not be empty",
    ],
    "inhibit-same-source-target.yaml": [
        "config/inhibit-same-source-target.yaml:4: inhibit[0]: source and target select the"
        " same alerts: they would mute each other",
    ],
    "inhibit-bad-label-name.yaml": [
        "config/inhibit-bad-label-name.yaml:5: inhibit[0].target: invalid label name"
        " 'rule name'",
    ],
    "route-bad-matcher.yaml": [
        "config/route-bad-matcher.yaml:7: routes[0].match: not a matcher: 'severity~critical'"
        " (expected name=value, !=, =~ or !~)",
    ],
    "route-bad-regex.yaml": [
        "config/route-bad-regex.yaml:7: routes[0].match: matcher rule=~run-(stalled|slow:"
        " invalid regular expression: missing ), unterminated subpattern at position 4",
    ],
    "route-match-not-a-mapping.yaml": [
        "config/route-match-not-a-mapping.yaml:7: routes[0].match: expected a mapping of"
        " label: value (literal or glob, or a list of them), or a list of matchers like"
        " 'severity=~warning|critical', got 'critical'",
    ],
    "bad-cron.yaml": [
        "config/bad-cron.yaml:7: digest.schedule: invalid cron schedule '0 25 * * *':"
        " hour '25' is not a value, range or step within 0-23",
    ],
    "cron-field-count.yaml": [
        "config/cron-field-count.yaml:7: digest.schedule: invalid cron schedule '0 8 * *':"
        " expected 5 fields (minute hour day-of-month month day-of-week), got 4",
    ],
    "bad-timezone.yaml": [
        "config/bad-timezone.yaml:7: digest.timezone: unknown time zone 'Europe/Berln'"
        " (expected e.g. Europe/Berlin, UTC)",
    ],
    "bad-listen.yaml": [
        "config/bad-listen.yaml:4: http.listen: invalid address '127.0.0.1':"
        " expected host:port",
    ],
    "empty-alias.yaml": [
        "config/empty-alias.yaml:5: aliases.reward: an alias needs at least one metric key",
    ],
    "rules-glob-no-match.yaml": [
        "config/rules-glob-no-match.yaml:4: rules[0]: no rule file matches"
        " 'no-such-dir/*.yaml'",
    ],
    "bad-store.yaml": [
        "config/bad-store.yaml:3: store: unknown store scheme 'mysql' (expected"
        " sqlite:///path.db, postgresql://host/database or memory://)",
    ],
    "invalid-yaml.yaml": [
        "config/invalid-yaml.yaml:4: invalid YAML: expected <block end>, but found '?'"
        " (while parsing a block collection at line 2)",
    ],
    "empty.yaml": ["config/empty.yaml:1: empty config file"],
    "top-level-list.yaml": [
        "config/top-level-list.yaml:1: expected a mapping of settings at the top level",
    ],
    "duplicate-key.yaml": ["config/duplicate-key.yaml:4: duplicate key 'repeat_interval'"],
    "three-errors.yaml": [
        "config/three-errors.yaml:4: sources[0].interval: invalid duration 'soon':"
        " expected a number with a unit like 30s, 10m, 2h, 1d",
        'config/three-errors.yaml:9: routes[0]: undefined receiver "pagerduty" used in route',
        "config/three-errors.yaml:10: send_resolved: expected true or false, got 'sometimes'",
    ],
}


@pytest.fixture
def in_testdata(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Error messages show paths relative to the working directory."""
    monkeypatch.chdir(TESTDATA)
    return TESTDATA


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_message(name: str, in_testdata: Path) -> None:
    expected = [line.replace("{testdata}", str(in_testdata)) for line in ERRORS[name]]
    with pytest.raises(ConfigError) as caught:
        load_config(Path("config") / name, env={})
    assert caught.value.errors == expected
    assert str(caught.value) == "\n".join(expected)


def test_every_error_file_has_a_case() -> None:
    assert sorted(p.name for p in (TESTDATA / "config").glob("*.yaml")) == sorted(ERRORS)


def test_every_error_is_reported_at_once(in_testdata: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("config/three-errors.yaml"), env={})
    assert len(caught.value.errors) == 3


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(Path("nope.yaml"))
    assert caught.value.errors == [
        "nope.yaml: cannot read config file: No such file or directory"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- ${VAR} expansion ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("${A}", "a"),
    ("x-${A}-${B}", "x-a-b"),
    ("${UNSET:-fallback}", "fallback"),
    ("${EMPTY:-fallback}", "fallback"),  # like the shell: empty counts as unset
    ("${A:-fallback}", "a"),
    ("${UNSET:-}", ""),
    ("${EMPTY}", ""),
    ("$$", "$"),
    ("$${A}", "${A}"),
    ("cost: $5", "cost: $5"),  # a lone dollar stays
    ("$$$${A}", "$${A}"),
])
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "B": "b", "EMPTY": ""}) == expected


def test_env_expansion_in_a_config(tmp_path: Path) -> None:
    path = write(tmp_path / "runwatch.yaml", """\
sources:
  - type: rundir
    name: "runs$$1"
    path: ${RUNS}
    interval: ${INTERVAL:-90s}
    depth: ${DEPTH}
send_resolved: ${SEND_RESOLVED:-false}
""")
    config = load_config(path, env={"RUNS": "/data/runs", "DEPTH": "3"})
    source = config.sources[0]
    assert source.name == "runs$1"
    assert source.paths == (Path("/data/runs"),)
    assert source.interval == 90.0
    assert source.depth == 3
    assert config.send_resolved is False


def test_env_defaults_to_the_process_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNWATCH_TEST_RUNS", "/from/env")
    path = write(tmp_path / "c.yaml", "sources: [{type: rundir, path: '${RUNWATCH_TEST_RUNS}'}]")
    assert load_config(path).sources[0].paths == (Path("/from/env"),)


# --- secrets ---------------------------------------------------------------------------


SLACK_FROM_FILE = """\
sources: [{type: rundir, path: runs}]
receivers:
  - name: team-slack
    slack: {token_file: secrets/slack, channel: "#alerts"}
  - name: mail
    email: {smtp: "smtp.example.com", starttls: true, username: bot,
            password_file: /PASSWORD_FILE, from: bot@example.com, to: ops@example.com}
"""


def test_secret_files_are_read_and_stripped(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "secrets" / "slack", "xoxb-from-file\n")
    password = write(tmp_path / "elsewhere" / "smtp", "pa ss\r\n")
    path = write(tmp_path / "conf" / "runwatch.yaml",
                 SLACK_FROM_FILE.replace("/PASSWORD_FILE", str(password)))
    config = load_config(path, env={})
    slack, email = config.receivers[0].slack, config.receivers[1].email
    assert slack is not None and slack.token is not None
    assert slack.token.get_secret_value() == "xoxb-from-file"  # relative to the config's dir
    assert email is not None and email.password is not None
    assert email.password.get_secret_value() == "pa ss"
    assert (email.smtp_host, email.smtp_port) == ("smtp.example.com", 587)
    assert email.to == ("ops@example.com",)


def test_wandb_api_key_file(tmp_path: Path) -> None:
    write(tmp_path / "key", "k" * 40 + "\n")
    path = write(tmp_path / "c.yaml", """\
sources:
  - {type: wandb, entity: team, projects: all, api_key_file: key}
""")
    source = load_config(path, env={}).sources[0]
    assert source.api_key.get_secret_value() == "k" * 40
    assert source.projects == "all"


def test_an_empty_secret_file_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "secrets" / "slack", "\n")
    write(tmp_path / "c.yaml", SLACK_FROM_FILE.replace("/PASSWORD_FILE", "secrets/slack"))
    with pytest.raises(ConfigError) as caught:
        load_config(Path("c.yaml"), env={})
    empty = tmp_path / "secrets" / "slack"
    assert caught.value.errors == [
        f"c.yaml:4: receivers[0].slack.token_file: secret file '{empty}' is empty",
        f"c.yaml:7: receivers[1].email.password_file: secret file '{empty}' is empty",
    ]


def test_secrets_never_show(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", """\
sources:
  - {type: wandb, entity: team, projects: [p], api_key: "${KEY}"}
receivers:
  - name: hook
    webhook: {url: "https://example.com/hook", bearer_token: hunter2-bearer,
              hmac_secret: 12345}
  - name: mail
    email: {smtp: "smtp.example.com:25", username: u, password: [hunter2-password],
            from: a@example.com, to: [b@example.com]}
store: postgresql://runwatch:hunter2-store@db/runwatch?schema=no-such
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"KEY": "hunter2-key"})
    message = str(caught.value)
    assert caught.value.errors == [
        f"{path}:6: receivers[0].webhook.hmac_secret: expected a string,"
        " got a value that is not shown (secret)",
        f"{path}:8: receivers[1].email.password: expected a string,"
        " got a value that is not shown (secret)",
        f"{path}:10: store: schema must be a plain SQL name (letters, digits, _)",
    ]
    assert "hunter2" not in message and "12345" not in message
    # pydantic's error holds the input: it must not ride along as the cause or context.
    assert caught.value.__cause__ is None and caught.value.__context__ is None

    fixed = path.read_text().replace("12345", '"12345"').replace(
        "[hunter2-password]", "hunter2-password").replace(
        "postgresql://runwatch:hunter2-store@db/runwatch?schema=no-such", "sqlite:///state.db")
    config = load_config(write(path, fixed), env={"KEY": "hunter2-key"})
    assert "hunter2" not in repr(config) and "12345" not in repr(config)
    assert "hunter2" not in str(config)
    assert config.sources[0].api_key.get_secret_value() == "hunter2-key"


def test_the_store_url_is_not_echoed(in_testdata: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("config/bad-store.yaml"), env={})
    assert "hunter2" not in str(caught.value)


# --- paths and defaults -------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", """\
sources:
  - {type: rundir, path: runs}
  - {type: wandb, entity: team, projects: llm}
"""), env={})
    rundir, wandb = config.sources
    assert (rundir.type, rundir.name, rundir.depth, rundir.interval) == (
        "rundir", "rundir", 6, 60.0)
    assert (wandb.type, wandb.name, wandb.projects, wandb.interval, wandb.lookback) == (
        "wandb", "wandb:team", ("llm",), 120.0, 86400.0)
    assert (wandb.base_url, wandb.app_url, wandb.api_key) == ("https://api.wandb.ai", None,
                                                              None)
    assert wandb.paths == ()
    state_dir = Path(platformdirs.user_state_dir("runwatch"))
    assert config.state_dir == state_dir
    assert config.store == f"sqlite:///{state_dir}/state.db"
    assert config.sqlite_path == state_dir / "state.db"
    assert config.rules == (default_rules_path(),)
    assert dict(config.aliases) == dict(keys.DEFAULT_ALIASES)
    assert (config.receivers, config.routes, config.digest) == ((), (), None)
    assert config.inhibit_is_default
    assert [(i.source, i.target) for i in config.inhibit] == [
        ({"rule": "grad-norm-exploding"}, {"rule": "grad-norm-spiky"}),
        ({"rule": "run-stalled"}, {"rule": "run-slow"}),
        ({"rule": "run-crashed"}, {"rule": ("run-stalled", "run-slow", "progress-stalled")})]
    assert config.repeat_interval == 4 * 3600
    assert config.send_resolved is True
    assert (config.http.listen, config.http.host, config.http.port) == (
        "127.0.0.1:9465", "127.0.0.1", 9465)
    assert config.path == tmp_path / "c.yaml"
    assert config.base_dir == tmp_path


def test_relative_paths_resolve_against_the_config_dir(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "etc" / "rules" / "team" / "a.yaml", "rules: []\n")
    write(tmp_path / "etc" / "runwatch.yaml", """\
sources:
  - {type: rundir, path: [../runs, /abs/runs]}
state_dir: state
store: sqlite:///db/state.db
rules: ["rules/**/*.yaml"]
""")
    monkeypatch.chdir(tmp_path)  # a relative config path, too
    config = load_config(Path("etc/runwatch.yaml"), env={})
    etc = tmp_path / "etc"
    assert config.sources[0].paths == (tmp_path / "runs", Path("/abs/runs"))
    assert config.state_dir == etc / "state"
    assert config.store == f"sqlite:///{etc}/db/state.db"
    assert config.rules == (f"{etc}/rules/**/*.yaml",)
    assert config.rule_set().files == ("etc/rules/team/a.yaml",)


def test_store_urls(tmp_path: Path) -> None:
    def store(line: str) -> Config:
        return load_config(write(tmp_path / "c.yaml", "sources: [{type: rundir, path: r}]\n"
                                 + line), env={})

    assert store("store: sqlite:////var/lib/runwatch/state.db").sqlite_path == Path(
        "/var/lib/runwatch/state.db")
    assert store("state_dir: /srv/rw").store == "sqlite:////srv/rw/state.db"
    timeout = store("store: SQLITE:///s.db?busy_timeout=5")
    assert timeout.store == f"sqlite:///{tmp_path}/s.db?busy_timeout=5"
    assert timeout.sqlite_path == tmp_path / "s.db"
    memory = store("store: memory://")
    assert (memory.store, memory.sqlite_path) == ("memory://", None)


def test_a_full_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", """\
sources:
  - type: wandb
    name: server
    entity: team
    projects: [a, b]
    base_url: https://wandb.example.com/
    filters: {tags: prod, group: sweep, created_after: 2025-01-02,
              query: {"config.lr": {"$gt": 0.1}}}
aliases:
  loss: train/my_loss
  reward: [rollout/reward, reward]
receivers:
  - name: hook
    webhook: {url: "https://example.com/hook"}
  - name: chat
    slack: {webhook_url: "https://hooks.slack.com/services/x"}
routes:
  - match: {severity: critical, project: "NO", step: 5}
    receivers: hook
    continue: true
    group_by: [run]
    group_wait: 1m
    repeat_interval: 1h
  - receivers: [chat]
inhibit:
  - {source: {severity: critical}, target: {severity: warning}, equal: [run, rule]}
digest: {schedule: "*/15 0-6,22 * jan-mar mon-fri", timezone: UTC, receivers: [chat]}
http: {listen: "[::1]:0"}
"""), env={})
    wandb = config.sources[0]
    assert (wandb.name, wandb.base_url) == ("server", "https://wandb.example.com")
    assert wandb.filters.tags == ("prod",)
    assert wandb.filters.created_after.isoformat() == "2025-01-02T00:00:00+00:00"
    assert wandb.filters.query == {"config.lr": {"$gt": 0.1}}
    assert config.aliases["loss"] == ("train/my_loss",)
    assert config.aliases["reward"] == ("rollout/reward", "reward")
    assert config.aliases["grad_norm"] == keys.DEFAULT_ALIASES["grad_norm"]
    route = config.routes[0]
    assert dict(route.match) == {"severity": "critical", "project": "NO", "step": "5"}
    assert (route.receivers, route.continue_, route.group_by) == (("hook",), True, ("run",))
    assert (route.group_wait, route.repeat_interval) == (60.0, 3600.0)
    assert config.routes[1].repeat_interval is None
    assert config.receiver("chat").kind == "slack"
    assert config.inhibit[0].equal == ("run", "rule")
    assert config.digest is not None and str(config.digest.zone) == "UTC"
    assert (config.http.host, config.http.port) == ("::1", 0)


@pytest.mark.parametrize(("schedule", "valid"), [
    ("0 8 * * *", True),
    ("*/15 0-6,22 * jan-mar mon-fri", True),
    ("30 7 1 * 7", True),
    ("0 8 * * MON", True),
    ("@daily", False),
    ("0 8 0 * *", False),  # days of the month start at 1
    ("0 8 * 13 *", False),
    ("*/0 * * * *", False),
    ("1-2-3 * * * *", False),
    ("0 8 * * * *", False),
])
def test_cron_schedules(schedule: str, valid: bool) -> None:
    if valid:
        assert Digest(schedule=schedule, receivers=["x"]).schedule == schedule
    else:
        with pytest.raises(ValueError, match="invalid cron schedule"):
            Digest(schedule=schedule, receivers=["x"])


def test_yaml_1_1_booleans_stay_strings(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", """\
sources: [{type: rundir, path: r}]
routes: [{match: {project: no, on: off}, receivers: [x]}]
receivers: [{name: x, webhook: {url: "http://x"}}]
send_resolved: no
"""), env={})
    assert dict(config.routes[0].match) == {"project": "no", "on": "off"}
    assert config.send_resolved is False  # a bool field still reads "no" as false


def test_the_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", "sources: [{type: rundir, path: r}]"),
                         env={})
    with pytest.raises(ValueError, match="frozen"):
        config.send_resolved = False  # type: ignore[misc]


def test_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = default_config(["runs", tmp_path / "more"], state_dir=tmp_path / "state")
    (source,) = config.sources
    assert source.paths == (tmp_path / "runs", tmp_path / "more")
    assert source.name == "rundir"  # stable: adding a path keeps every run's cursor
    assert config.store == f"sqlite:///{tmp_path}/state/state.db"
    assert config.path is None
    assert config.rules == (default_rules_path(),)
    assert {r.name for r in config.rule_set().rules} >= {"run-stalled", "loss-nonfinite"}


def test_default_config_without_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        default_config([])
    assert caught.value.errors == ["sources[0].path: must not be empty"]


# --- the shipped example ------------------------------------------------------------


def test_the_example_config_loads() -> None:
    """Where it ships, alone (tests/integration/test_deploy.py installs it as documented),
    with the secrets of deploy/systemd/env.example."""
    env = {"WANDB_API_KEY": "k" * 40, "SLACK_BOT_TOKEN": "xoxb-1", "SMTP_USER": "runwatch",
           "SMTP_PASSWORD": "smtp-secret"}
    config, rules = load_all(EXAMPLE, env=env)
    assert config.rules == (default_rules_path(),)  # nothing beside it is needed
    assert [s.type for s in config.sources] == ["rundir", "wandb"]
    assert [r.name for r in config.receivers] == ["team-slack", "oncall-email"]
    assert config.receivers[1].email.password.get_secret_value() == "smtp-secret"
    assert config.sqlite_path == Path("/var/lib/runwatch/state.db")
    assert [i.source["rule"] for i in config.inhibit] == ["run-crashed", "grad-norm-exploding"]
    assert config.inhibit[0].target == {"rule": ("run-stalled*", "run-slow", "progress-stalled")}
    assert [i.equal for i in config.inhibit] == [("run",), ("run",)]
    assert config.digest is not None and config.digest.timezone == "Europe/Berlin"
    assert "run-crashed" in {r.name for r in rules.rules}


# --- YAML details -------------------------------------------------------------------


def test_merge_keys_may_be_overridden_but_keys_not_repeated(tmp_path: Path) -> None:
    text = """\
sources: [{type: rundir, path: r}]
receivers:
  - name: a
    webhook: &hook {url: "https://example.com/a", bearer_token: t}
  - name: b
    webhook:
      <<: *hook
      url: "https://example.com/b"
"""
    config = load_config(write(tmp_path / "c.yaml", text), env={})
    assert [r.webhook.url for r in config.receivers] == ["https://example.com/a",
                                                         "https://example.com/b"]
    assert config.receivers[1].webhook.bearer_token.get_secret_value() == "t"
    path = write(tmp_path / "c.yaml", text + '      url: "https://example.com/c"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.errors == [f"{path}:9: receivers[1].webhook: duplicate key 'url'"]


@pytest.mark.parametrize(("text", "expected"), [
    ("a: &x [*x]\n", "c.yaml:1: a[0]: recursive YAML alias"),
    ("a: !!python/object:os.system x\n", "c.yaml:1: a: invalid YAML: could not determine a"
     " constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"),
    ("a: 1\n---\nb: 2\n", "c.yaml:2: invalid YAML: but found another document (expected a"
     " single document in the stream at line 1)"),
    ("? [a]\n: 1\n", "c.yaml:1: a mapping key must be a plain string"),
])
def test_yaml_that_is_refused(text: str, expected: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(Path("c.yaml"), env={})
    assert caught.value.errors[0] == expected


# --- receivers: slack api_url, email charts and ca_file -------------------------------------
# (collected after ERRORS' own parametrisation ran, so they get their own test below)

RECEIVER_ERRORS = {
    "slack-api-url-with-webhook.yaml": [
        "config/slack-api-url-with-webhook.yaml:5: receivers[0].slack: api_url is for a"
        " token; a webhook_url is the whole address",
    ],
    "slack-bad-api-url.yaml": [
        "config/slack-bad-api-url.yaml:8: receivers[0].slack.api_url: invalid URL"
        " 'slack-gov.com/api': expected http:// or https://",
    ],
    "email-ca-file-missing.yaml": [
        "config/email-ca-file-missing.yaml:8: receivers[0].email.ca_file: cannot read CA file"
        " '{testdata}/config/secrets/no-such-ca.pem': No such file or directory",
    ],
    "email-ca-file-not-pem.yaml": [
        "config/email-ca-file-not-pem.yaml:8: receivers[0].email.ca_file: CA file"
        " '{testdata}/config/email-ca-file-not-pem.yaml' holds no PEM certificate",
    ],
    "email-ca-file-without-tls.yaml": [
        "config/email-ca-file-without-tls.yaml:7: receivers[0].email.ca_file: needs tls or"
        " starttls",
    ],
}
ERRORS.update(RECEIVER_ERRORS)


@pytest.mark.parametrize("name", sorted(RECEIVER_ERRORS))
def test_receiver_error_message(name: str, in_testdata: Path) -> None:
    test_error_message(name, in_testdata)


def test_receiver_options_and_their_defaults(tmp_path: Path) -> None:
    shutil.copy(TESTDATA / "config" / "ca.pem", tmp_path / "relay-ca.pem")
    config = load_config(write(tmp_path / "c.yaml", """\
sources: [{type: rundir, path: r}]
receivers:
  - {name: gov, slack: {token: xoxb-1, channel: "#a", api_url: "https://slack-gov.com/api"}}
  - {name: plain, slack: {token: xoxb-1, channel: "#a"}}
  - {name: hook, slack: {webhook_url: "https://hooks.slack.com/services/x"}}
  - name: relay
    email: {smtp: "relay:587", starttls: true, ca_file: relay-ca.pem, charts: true,
            from: a@example.com, to: b@example.com}
  - {name: mail, email: {smtp: relay, from: a@example.com, to: b@example.com}}
  - {name: web, webhook: {url: "https://example.com/x"}}
"""), env={})
    gov, plain, hook, relay, mail, _web = config.receivers
    assert gov.slack.api_url == "https://slack-gov.com/api/"  # the SDK appends method names
    assert plain.slack.api_url is None and hook.slack.api_url is None
    assert relay.email.ca_file == tmp_path / "relay-ca.pem"  # relative to the config file
    assert (relay.email.charts, mail.email.charts, mail.email.ca_file) == (True, False, None)
    assert [r.charts for r in config.receivers] == [False, False, False, True, False, None]


def test_the_status_pages_token_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    write(tmp_path / "token", "s3cret\n")
    write(tmp_path / "c.yaml", "sources: [{type: rundir, path: runs}]\n"
          "http: {listen: '0.0.0.0:9465', token_file: token}\n")
    assert load_config(Path("c.yaml"), env={}).http.token() == "s3cret"
    write(tmp_path / "c.yaml", "sources: [{type: rundir, path: runs}]\n"
          "http: {listen: '0.0.0.0:9465', token_file: missing}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(Path("c.yaml"), env={})
    [line] = caught.value.errors
    assert line.startswith("c.yaml:2: http.token_file: cannot read token_file")
    assert "missing" in line and "No such file" in line


def test_the_status_pages_users_file(tmp_path: Path, monkeypatch) -> None:
    from runwatch.web.auth import hash_password

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    write(tmp_path / "users", f"ana:{hash_password('correct horse', iterations=1000)}\n")
    write(tmp_path / "c.yaml", "sources: [{type: rundir, path: runs}]\n"
          "http: {listen: '0.0.0.0:9465', users_file: users}\n")
    assert set(load_config(Path("c.yaml"), env={}).http.users() or {}) == {"ana"}
    write(tmp_path / "users", "ana:plain-text-password\n")
    with pytest.raises(ConfigError) as caught:
        load_config(Path("c.yaml"), env={})
    [line] = caught.value.errors
    assert line.startswith("c.yaml:2: http.users_file: ") and "users:1: expected name:" in line
