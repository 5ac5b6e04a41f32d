"""A config or rule file cannot take the daemon down, and no error shows a secret.

Every file is read within fixed bounds (size, values, nesting, alias expansion), each
refusal one line at its file and line; every URL an error shows has its credentials and
query string masked, and URLs that would send credentials to DNS are refused.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from runwatch.cli import main
from runwatch.config import ConfigError, load_all
from runwatch.config.document import MAX_ALIASED, MAX_FILE_BYTES, MAX_VALUES

SOURCES = "sources: [{type: rundir, path: runs}]\n"


def laughs() -> str:
    """A kilobyte of "billion laughs": nine levels of nine aliases, 9**9 values built."""
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        name, inner = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{inner}'] * 9)}]")
    return SOURCES + "\n".join(lines) + "\n"


def merge_keys() -> str:
    """Merge keys that double at every level: 2**40 pairs once flattened."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 41)]
    return SOURCES + "\n".join(lines) + "\n"


def behind_skipped_keys() -> str:
    """The same, with the anchors on values the loader skips (behind keys it refuses), so
    that one merge at the end would flatten every level at once."""
    lines = ["s0: &s0 {a: 1, b: 2}"]
    lines += [f"? [k{i}]\n: &s{i} {{<<: [*s{i - 1}, *s{i - 1}]}}" for i in range(1, 41)]
    return SOURCES + "\n".join(lines) + "\nlast: {<<: [*s40]}\n"


def large() -> str:
    return SOURCES + "# padding\n" * (MAX_FILE_BYTES // 10)


# name → (file text, the line and message of the one error)
HOSTILE = {
    # e: the first alias past the bound (a: 9, b: +90, c: +819, d: +7,380, e: +7,381 ...)
    "billion-laughs": (laughs(), 6, f"YAML aliases expand to more than {MAX_ALIASED:,} values:"
                                    " not read"),
    "merge-keys": (merge_keys(), 11, f"YAML aliases expand to more than {MAX_ALIASED:,}"
                                     " values: not read"),
    # the `<<: [*s9, *s9]` line, where the aliases are
    "behind-skipped-keys": (behind_skipped_keys(), 22, "YAML aliases expand to more than"
                                                       f" {MAX_ALIASED:,} values: not read"),
    "deep": (SOURCES + "x: " + "[" * 600 + "]" * 600 + "\n", 2,  # unguarded: RecursionError
             "invalid YAML: nested deeper than 64 levels"),
    # 10 values on lines 1-2, then one a line: value 20,001 is on line 19,993
    "wide": (SOURCES + "x:\n" + "- a\n" * MAX_VALUES, MAX_VALUES - 10 + 3,
             f"invalid YAML: more than {MAX_VALUES:,} values"),
    # the line byte 262,145 is on
    "large": (large(), large().encode()[:MAX_FILE_BYTES].count(b"\n") + 1,
              "{what} is larger than 1024 KiB: not read"),
}


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


ALIAS_BOMBS = ("billion-laughs", "merge-keys", "behind-skipped-keys")  # gigabytes, expanded


def refused(path: Path) -> list[str]:
    """The errors of loading ``path``: the config and the rule files it names."""
    with pytest.raises(ConfigError) as caught:
        load_all(path, env={})
    return caught.value.errors


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_config_file_is_refused_in_one_line(name, tmp_path):
    text, line, message = HOSTILE[name]
    path = write(tmp_path / "runwatch.yaml", text)
    assert refused(path) == [f"{path}:{line}: {message.format(what='config file')}"]


@pytest.mark.parametrize("name", ["billion-laughs", "large"])
def test_a_hostile_rule_file_is_refused_in_one_line(name, tmp_path):
    """Rule files go through the same reader, on every reload too."""
    text, line, message = HOSTILE[name]
    rules = write(tmp_path / "rules" / "bad.yaml", text)
    config = write(tmp_path / "runwatch.yaml", SOURCES + "rules: [rules/*.yaml]\n")
    assert refused(config) == [f"{rules}:{line}: {message.format(what='rule file')}"]


@pytest.mark.parametrize("name", ALIAS_BOMBS)
def test_an_alias_bomb_is_refused_within_bounded_memory(name, tmp_path):
    path = write(tmp_path / "runwatch.yaml", HOSTILE[name][0])
    tracemalloc.start()
    try:
        assert len(refused(path)) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # all of runwatch's own reading (expanded: gigabytes)


def test_anchors_for_shared_settings_stay_usable(tmp_path):
    """The bound counts what aliases add: a hundred receivers merging one anchor load."""
    shared = "{url: 'https://h/0', bearer_token: t, hmac_secret: 0123456789abcdef}"
    receivers = "".join(f"  - {{name: r{i}, webhook: {{<<: *hook, url: 'https://h/{i}'}}}}\n"
                        for i in range(1, 100))
    path = write(tmp_path / "runwatch.yaml", SOURCES + "receivers:\n"
                 f"  - {{name: r0, webhook: &hook {shared}}}\n" + receivers)
    config, _ = load_all(path, env={})
    assert [r.webhook.url for r in config.receivers] == [f"https://h/{i}" for i in range(100)]
    assert {r.webhook.hmac_secret.get_secret_value() for r in config.receivers} == {
        "0123456789abcdef"}


def test_a_file_that_is_not_utf8_is_one_line_at_its_line(tmp_path):
    path = write(tmp_path / "runwatch.yaml", SOURCES.encode() + b"x: caf\xe9\n")
    assert refused(path) == [f"{path}:2: cannot read config file: not UTF-8 text"]


def test_validate_refuses_a_bomb_in_one_line_without_a_traceback(tmp_path, capsys):
    path = write(tmp_path / "runwatch.yaml", laughs())
    assert main(["validate", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"{path}:6: YAML aliases expand to more than 10,000 values:"
                              " not read\n")


# --- secrets in URLs ---------------------------------------------------------------------

# config after `sources:` → the one error, after "{file}:{line}: ". "hunter2" is the secret.
SECRET_URLS = {
    "webhook user:password@": (
        "receivers: [{name: ops, webhook: {url: 'https://ops:hunter2@hooks.example.com/x'}}]",
        "2: receivers[0].webhook.url: invalid URL 'https://ops:***@hooks.example.com/x':"
        " user:password@ in a URL is not supported; give secrets in their own fields"
        " (bearer_token, api_key)"),
    "webhook token@": (
        "receivers: [{name: ops, webhook: {url: 'https://hunter2@hooks.example.com/x'}}]",
        "2: receivers[0].webhook.url: invalid URL 'https://***@hooks.example.com/x':"
        " user:password@ in a URL is not supported; give secrets in their own fields"
        " (bearer_token, api_key)"),
    "webhook without a scheme, token in the query": (
        "receivers: [{name: ops, webhook: {url: 'hooks.example.com/x?token=hunter2'}}]",
        "2: receivers[0].webhook.url: invalid URL 'hooks.example.com/x?***': expected"
        " http:// or https://"),
    "webhook with a bad port": (
        "receivers: [{name: ops, webhook: {url: 'https://ops:hunter2@hooks.example.com:x/'}}]",
        "2: receivers[0].webhook.url: invalid URL '<unparseable URL>': its host or port is"
        " not valid"),
    "slack api_url user:password@": (
        "receivers:\n  - name: chat\n    slack: {token: xoxb-1, channel: '#a',"
        " api_url: 'https://u:hunter2@slack.example/api/'}",
        "4: receivers[0].slack.api_url: invalid URL 'https://u:***@slack.example/api/':"
        " user:password@ in a URL is not supported; give secrets in their own fields"
        " (bearer_token, api_key)"),
    "slack api_url query": (
        "receivers:\n  - name: chat\n    slack: {token: xoxb-1, channel: '#a',"
        " api_url: 'https://slack.example/api/?token=hunter2'}",
        "4: receivers[0].slack.api_url: invalid URL 'https://slack.example/api/?***': a base"
        " URL takes no query string or fragment (paths are appended to it)"),
    "wandb base_url user:password@": (
        "  - {type: wandb, entity: e, projects: all, base_url: 'https://u:hunter2@wandb.example'}",
        "3: sources[1].base_url: invalid URL 'https://u:***@wandb.example': user:password@ in"
        " a URL is not supported; give secrets in their own fields (bearer_token, api_key)"),
    "wandb app_url query": (
        "  - {type: wandb, entity: e, projects: all, app_url: 'https://wandb.example/?k=hunter2'}",
        "3: sources[1].app_url: invalid URL 'https://wandb.example/?***': a base URL takes no"
        " query string or fragment (paths are appended to it)"),
    "store password": (
        "store: postgresql://runwatch:hunter2@db/runwatch?schema=a-b",
        "2: store: schema must be a plain SQL name (letters, digits, _)"),
    "store query": (
        "store: sqlite:///state.db?password=hunter2",
        "2: store: unknown option 'password' (sqlite takes busy_timeout)"),
    "smtp user:password@": (
        "receivers: [{name: mail, email: {smtp: 'u:hunter2@smtp.example.com:25',"
        " from: a@example.com, to: b@example.com}}]",
        "2: receivers[0].email.smtp: expected host:port; a login goes in username and"
        " password"),
}


@pytest.mark.parametrize("case", sorted(SECRET_URLS))
@pytest.mark.parametrize("command", [["validate"], ["check", "--dry-run"]])
def test_a_url_holding_a_secret_is_refused_without_showing_it(case, command, tmp_path,
                                                              capsys):
    snippet, error = SECRET_URLS[case]
    sources = "sources:\n  - {type: rundir, path: runs}\n" if snippet.startswith("  -") \
        else SOURCES
    path = write(tmp_path / "runwatch.yaml", sources + snippet + "\n")
    assert main([*command, "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"{path}:{error}\n")
    assert "hunter2" not in out + err


def test_a_fifo_as_a_config_or_rule_file_is_refused_not_waited_on(tmp_path):
    """A FIFO where a config or rule file belongs would block the read — and a reload —
    for ever."""
    fifo = tmp_path / "rules" / "stuck.yaml"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    config = write(tmp_path / "runwatch.yaml", SOURCES + "rules: [rules/stuck.yaml]\n")
    [line] = refused(config)  # a rule file is a regular file: the FIFO is never opened
    assert line == f"{config}:2: rules[0]: no rule file matches 'rules/stuck.yaml'"
    [line] = refused(fifo)
    assert line == f"{fifo}: cannot read config file: not a regular file"


def test_a_rule_file_of_thousands_of_rules_sharing_anchors_loads(tmp_path):
    """A big team's rule file: 3,000 rules, each merging a shared anchor — within bounds."""
    rules = ["rules:", "  - &base {name: r0, kind: threshold, metric: loss, op: '>',"
                       " value: 1, severity: warning, labels: {team: ml, tier: a}}"]
    rules += [f"  - {{<<: *base, name: r{i}, value: {i}}}" for i in range(1, 3000)]
    write(tmp_path / "rules" / "team.yaml", "\n".join(rules) + "\n")
    config = write(tmp_path / "runwatch.yaml", SOURCES + "rules: [rules/*.yaml]\n")
    _, rule_set = load_all(config, env={})
    assert len(rule_set.rules) == 3000
