"""The command line: exit codes, one-line errors, JSON shape. Runs `main()` in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runwatch.cli import main

TESTDATA = Path(__file__).parent.parent / "testdata"


def write_config(tmp_path: Path, rules_yaml: str | None = None, extra: str = "") -> Path:
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    lines = [
        "sources:",
        "  - type: rundir",
        f"    path: {runs}",
        "store: sqlite:///state.db",
    ]
    if rules_yaml is not None:
        (tmp_path / "rules.yaml").write_text(rules_yaml)
        lines.append("rules: [rules.yaml]")
    path = tmp_path / "runwatch.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_validate_ok(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["validate", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 8 rules, sources: rundir, store: sqlite:////")


def test_invalid_rules_exit_2_with_one_line_per_error(tmp_path, capsys):
    shutil.copy(TESTDATA / "rules" / "three-errors.yaml", tmp_path / "bad.yaml")
    config = write_config(tmp_path, extra="rules: [bad.yaml]\n")
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert all(line.split(":")[0].endswith("bad.yaml") for line in err)
    assert "Traceback" not in "".join(err)


def test_broken_yaml_config_exit_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  - type: rundir\n    path: [unclosed\n")
    assert main(["validate", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{path}:") and "invalid YAML" in line


def test_missing_config_file_exit_2(tmp_path, capsys):
    assert main(["validate", "--config", str(tmp_path / "nope.yaml")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "nope.yaml" in line


def test_rundir_and_config_are_exclusive(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["check", "--config", str(config), "--rundir", str(tmp_path)]) == 2
    assert "--rundir cannot be combined with --config" in capsys.readouterr().err


def test_rules_lists_names_kinds_and_origins(tmp_path, capsys):
    config = write_config(tmp_path, "rules:\n  - name: nan\n    kind: nonfinite\n"
                                    "    metric: loss\n    severity: critical\n")
    assert main(["rules", "--config", str(config), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry == {"name": "nan", "kind": "nonfinite", "severity": "critical",
                     "origin": f"{tmp_path / 'rules.yaml'}:2"}


def test_rules_table_describes_the_default_rules(tmp_path, capsys):
    assert main(["rules", "--rundir", str(tmp_path), "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grad-norm-exploding" in out and "grad_norm > 10 (any)" in out
    assert "progress-stalled" in out


def test_check_on_an_empty_directory_reports_zero_runs(tmp_path, capsys):
    args = ["check", "--rundir", str(tmp_path), "--state-dir", str(tmp_path / "state"),
            "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == {
        "transitions": [], "runs_checked": 0, "errors": [], "warnings": []}
    assert (tmp_path / "state" / "state.db").exists()


def test_an_unopenable_store_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "state.db").write_text("this is not a database")
    config = write_config(tmp_path)
    assert main(["check", "--config", str(config)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("runwatch: store ") and "state.db" in line


@pytest.mark.parametrize("command", ["check", "validate", "rules"])
def test_help_works(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_printable_defuses_terminal_escapes_and_bidi_overrides():
    from runwatch.cli import printable

    assert printable("run\x1b[31m-red\u202e\nx") == "run\ufffd[31m-red\ufffd\ufffdx"
    assert printable("llama-7b · ünïcode") == "llama-7b · ünïcode"


def test_validate_refuses_a_source_type_this_version_cannot_read(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  - {type: wandb, entity: team, projects: [p], api_key: k}\n")
    assert main(["validate", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{config}: source 'wandb:team': type 'wandb' is not supported by this version"
        " of runwatch")
