"""`runwatch schema`: the JSON Schema of rule files and of the config, from the models
that validate them. The shipped files name it and pass it; bad files that the schema can
judge are rejected by it and by the loader alike, both naming the same field or value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from runwatch.cli import main
from runwatch.config import ConfigError, load_config, load_rules
from runwatch.schema import config_schema, rules_schema

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "tests" / "testdata"
RULES_SCHEMA = REPO / "daemon" / "runwatch" / "rules" / "rules.schema.json"
CONFIG_SCHEMA = REPO / "config" / "config.schema.json"


def findings(schema: dict[str, Any], document: Any) -> list[str]:
    """Every error the schema finds, nested ones (under oneOf/anyOf) included, as text:
    the path into the document, then the message."""
    found = []
    pending = list(jsonschema.Draft202012Validator(schema).iter_errors(document))
    while pending:
        error = pending.pop()
        found.append(f"{'.'.join(map(str, error.absolute_path))}: {error.message}")
        pending.extend(error.context or ())
    return found


@pytest.mark.parametrize(("what", "generate"), [("rules", rules_schema),
                                                ("config", config_schema)])
def test_the_command_prints_the_schema(capsys, what, generate):
    assert main(["schema", what]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == generate()
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(("path", "generate"), [(RULES_SCHEMA, rules_schema),
                                                (CONFIG_SCHEMA, config_schema)])
def test_the_shipped_schema_files_are_current(path, generate):
    shipped = json.loads(path.read_text())
    assert shipped == generate(), (
        f"{path.name} is stale: runwatch schema {'rules' if 'rules' in path.name else 'config'}"
        f" > {path.relative_to(REPO)}")


@pytest.mark.parametrize(("shipped", "schema_file", "generate"), [
    (REPO / "rules" / "default.yaml", RULES_SCHEMA, rules_schema),
    (REPO / "daemon" / "runwatch" / "rules" / "default.yaml", RULES_SCHEMA, rules_schema),
    (REPO / "config" / "runwatch.example.yaml", CONFIG_SCHEMA, config_schema),
])
def test_shipped_files_name_their_schema_and_pass_it(shipped, schema_file, generate):
    first = shipped.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    named = shipped.parent / first.split("$schema=", 1)[1]
    assert named.resolve() == schema_file.resolve()  # the line finds the file from there
    assert findings(generate(), yaml.safe_load(shipped.read_text())) == []


def test_a_rule_of_every_kind_and_every_spelling_passes():
    rules = [
        {"name": "a", "kind": "threshold", "metric": "loss", "op": ">", "value": 1,
         "severity": "critical", "for": "10m", "mode": "mean", "window": 5,
         "match": {"project": "p*", "tags": ["prod", "big"], "config": {"lr": 0.1}},
         "labels": {"team": "ml", "tier": 1}},
        {"name": "b", "kind": "threshold", "metric": "loss", "op": "<", "value": 1,
         "severity": "info", "for": "500 steps"},
        {"name": "c", "kind": "nonfinite", "metric": "loss", "severity": "warning"},
        {"name": "d", "kind": "heartbeat", "older_than": "1h30m", "severity": "warning"},
        {"name": "e", "kind": "heartbeat", "older_than": 600, "severity": "warning"},
        {"name": "f", "kind": "state", "states": "failed", "severity": "critical"},
        {"name": "g", "kind": "spike", "metric": "grad_norm", "severity": "warning"},
        {"name": "h", "kind": "plateau", "metric": "loss", "patience": "2000 steps",
         "severity": "info"},
        {"name": "i", "kind": "absent", "metric": "eval/loss", "older_than": "2h",
         "severity": "info"},
        {"name": "j", "kind": "progress", "older_than": "30m", "severity": "critical"},
    ]
    assert findings(rules_schema(), {"rules": rules}) == []
    load_rules_from = RULES_SCHEMA.parent / "default.yaml"
    assert load_rules([str(load_rules_from)], REPO)  # and the shipped ones load


def test_every_config_spelling_passes(tmp_path):
    config = {
        "sources": [
            {"type": "rundir", "path": "runs", "interval": "30s", "first_read": "5000 rows"},
            {"type": "rundir", "name": "b", "path": ["a", "b"], "first_read": 300},
            {"type": "rundir", "name": "c", "path": "c", "first_read": "6h"},
            {"type": "rundir", "name": "d", "path": "d", "first_read": "all"},
            {"type": "wandb", "entity": "team", "projects": "all", "api_key_file": "key"},
            {"type": "wandb", "name": "w2", "entity": "team", "projects": ["a", "b"]},
        ],
        "store": "sqlite:///state.db",
        "rules": "rules/*.yaml",
        "aliases": {"loss": "train/loss_total"},
        "receivers": [
            {"name": "s", "slack": {"token_file": "token", "channel": "#ml"}},
            {"name": "m", "email": {"smtp": "smtp.example.com:587", "starttls": True,
                                   "from": "rw@example.com", "to": "oncall@example.com",
                                   "password_file": "pw", "username": "rw"}},
            {"name": "w", "webhook": {"url": "https://example.com/hook"}},
        ],
        "routes": [{"match": {"severity": ["critical", "warning"]}, "receivers": "s",
                    "group_by": ["rule"], "group_wait": "30s", "continue": True},
                   {"match": ["severity=~warning|critical", "team!=infra"],
                    "receivers": ["m", "w"]}],
        "inhibit": [{"source": {"rule": "a"}, "target": {"rule": "b"}, "equal": "run"}],
        "digest": {"receivers": "s", "schedule": "0 8 * * *", "timezone": "Europe/Paris"},
        "http": {"listen": "127.0.0.1:9465"},
        "repeat_interval": "4h",
    }
    assert findings(config_schema(), config) == []


# A bad file, and what both the schema and the loader must name in their complaints (or
# how each says it, where their words differ).
RULE_CASES = [
    ("missing-kind.yaml", "kind"),
    ("bad-duration.yaml", "10 parsecs"),
    ("unknown-field.yaml", "bogus"),
    ("field-typo.yaml", "older_then"),
    ("missing-field.yaml", "metric"),
    ("bad-severity.yaml", "fatal"),
    ("bad-op.yaml", "=>"),
    ("bad-value.yaml", "ten"),
    ("bad-match.yaml", "projects"),
    ("bad-window.yaml", "window"),
    ("no-rules-key.yaml", "rules"),
    ("rules-not-a-list.yaml", "rules"),
    ("top-level-list.yaml", ("mapping", "object")),  # the loader's word, the schema's
]
CONFIG_CASES = [
    ("unknown-top-level-key.yaml", "receviers"),
    ("missing-sources.yaml", "sources"),
    ("unknown-source-type.yaml", "rundirs"),
    ("bad-interval.yaml", "5 fortnights"),
    ("zero-interval.yaml", "interval"),
    ("bad-depth.yaml", "deep"),
    ("bad-first-read.yaml", "lots"),
    ("route-no-receivers.yaml", "receivers"),
    ("wandb-missing-entity.yaml", "entity"),
    ("route-bad-continue.yaml", "maybe"),
    ("route-match-not-a-mapping.yaml", "critical"),
]


def loader_message(load, path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return str(caught.value)


@pytest.mark.parametrize(("name", "named"), RULE_CASES)
def test_bad_rule_files_are_rejected_by_the_schema_as_by_the_loader(name, named):
    path = TESTDATA / "rules" / name
    message = loader_message(lambda p: load_rules([str(p)], p.parent), path)
    found = findings(rules_schema(), yaml.safe_load(path.read_text()))
    same_complaint(name, named, message, found)


def same_complaint(name: str, named: str | tuple[str, str], message: str,
                   found: list[str]) -> None:
    loader_word, schema_word = (named, named) if isinstance(named, str) else named
    assert loader_word in message
    assert found, f"the schema passes {name}, which the loader refuses: {message}"
    assert any(schema_word in text for text in found), (message, found)


@pytest.mark.parametrize(("name", "named"), CONFIG_CASES)
def test_bad_configs_are_rejected_by_the_schema_as_by_the_loader(name, named, monkeypatch):
    monkeypatch.chdir(TESTDATA / "config")
    path = TESTDATA / "config" / name
    message = loader_message(lambda p: load_config(p, env={}), path)
    found = findings(config_schema(), yaml.safe_load(path.read_text()))
    same_complaint(name, named, message, found)


@pytest.mark.parametrize(("text", "taken"), [
    *((text, True) for text in ("30s", "10m", "2h", "1d", "1w", "500ms", "1h30m", "1.5h",
                                " 2 h ", "90", "0.5", "0s")),
    *((text, False) for text in ("10 parsecs", "h", "", "1h-30m", "-5m", "10mins",
                                 "5 steps", "1,5h", "NaN", "inf")),
])
def test_the_duration_pattern_takes_what_the_loader_takes(text, taken):
    """The usual spellings, both ways. (The loader also takes any number Python's float()
    reads, such as 1e3; the schema asks for plain digits there.)"""
    import re

    from runwatch.duration import parse_duration
    from runwatch.fieldtypes import DURATION_TEXT, duration_schema

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = None
    assert (seconds is not None) == taken
    assert (re.search(DURATION_TEXT, text) is not None) == taken
    positive = duration_schema(above_zero=True)["anyOf"][1]["pattern"]
    assert (re.search(positive, text) is not None) == bool(seconds)
