"""Bad input through the real CLI: one clear line on stderr, the documented exit code, no traceback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import assert_one_clean_error, write

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "compat" / "llm-orc"


def test_unknown_ensemble_lists_what_exists(orc):
    result = orc("run", "no-such-ensemble", "x")
    assert_one_clean_error(result, 2)
    assert "not found" in result.stderr and "perspectives" in result.stderr


def test_invalid_ensemble_exits_2_with_every_problem(orc):
    write(orc.work, "bad.yaml", "name: bad\nagents:\n  - {name: a, modle: m}\n  - {name: b, depends_on: [a, b]}\n")
    result = orc("run", "bad.yaml", "x")
    assert_one_clean_error(result, 2)
    assert "did you mean 'model'" in result.stderr and "depends on itself" in result.stderr


def test_unknown_model_exits_3_and_lists_models(orc):
    write(orc.work, "m.yaml", "name: m\nagents:\n  - {name: a, model: llama3:70b}\n")
    result = orc("run", "m.yaml", "x")
    assert_one_clean_error(result, 3)
    assert "no node has model 'llama3:70b'" in result.stderr and "smollm2-135m-instruct" in result.stderr
    assert "model_aliases" in result.stderr


def test_model_alias_in_config_maps_foreign_names(orc, home):
    (home / "config.yaml").write_text("model_aliases:\n  'llama3:70b': smollm2-135m-instruct\n")
    write(orc.work, "m.yaml", "name: m\nagents:\n  - {name: a, model: 'llama3:70b', max_tokens: 4}\n")
    result = orc("run", "m.yaml", "x", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["results"]["a"]["model"] == "smollm2-135m-instruct"


def test_missing_profile_and_script_exit_2(orc):
    write(orc.work, "p.yaml", "name: p\nagents:\n  - {name: a, model_profile: security-auditor}\n"
                              "  - {name: s, script: nowhere.py}\n")
    result = orc("run", "p.yaml", "x")
    assert_one_clean_error(result, 2)
    assert "model profile 'security-auditor' is not defined" in result.stderr
    assert "nowhere.py" in result.stderr


def test_missing_input_file_and_no_input(orc):
    assert_one_clean_error(orc("run", "perspectives", "-f", "missing.txt"), 2)
    endless = orc("run", "perspectives", "-f", "/dev/zero")  # read bounded, never to the end
    assert_one_clean_error(endless, 2)
    assert "larger than 16 MiB" in endless.stderr
    write(orc.work, "n.yaml", "name: n\nagents:\n  - {name: a, model: smollm2-135m-instruct}\n")
    result = orc("run", "n.yaml")
    assert_one_clean_error(result, 2)
    assert "no input" in result.stderr


@pytest.mark.parametrize("content", [b"\x00\x01binary", b"a: &a [*a]", b"[" * 3000, "x: \xff".encode("latin-1")])
def test_hostile_files_exit_2(orc, content):
    (orc.work / "h.yaml").write_bytes(content)
    for command in (("run", "h.yaml", "x"), ("ensembles", "validate", "h.yaml")):
        assert_one_clean_error(orc(*command), 2)


def test_validate_levels(orc):
    write(orc.work, "w.yaml", "name: w\nextra: 1\nagents:\n  - {name: a, model_profile: missing-profile}\n"
                              "  - {name: s, script: absent.py}\n")
    result = orc("ensembles", "validate", "w.yaml")
    assert result.code == 0
    assert "unknown top-level key 'extra'" in result.stderr
    assert "missing-profile" in result.stderr and "absent.py" in result.stderr


def test_corrupt_journal_and_unknown_run(orc, home):
    assert_one_clean_error(orc("runs", "show", "deadbeef"), 2)
    (home / "runs").mkdir()
    (home / "runs" / "bad.journal").write_bytes(b"\xc1\xc1\xc1")
    assert_one_clean_error(orc("runs", "show", "bad"), 2)
    assert orc("runs", "list").code == 0


def test_bad_model_file_refused(orc):
    (orc.work / "fake.gguf").write_bytes(b"NOPE" + b"\0" * 100)
    assert_one_clean_error(orc("models", "add", "fake.gguf"), 2)


@pytest.mark.skipif(not CORPUS.is_dir() and not os.environ.get("CI"), reason=f"llm-orc corpus not found at {CORPUS}")
def test_llm_orc_project_validates_and_refuses_to_run_unmapped_models(orc, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(CORPUS, project / ".llm-orc", symlinks=True)
    files = sorted(str(p) for p in (project / ".llm-orc" / "ensembles").rglob("*.yaml"))
    result = orc("ensembles", "validate", *files, cwd=project)
    assert result.code == 2  # exactly one file is structurally wrong: the profile cycle demo
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cycle-test-a -> cycle-test-b -> cycle-test-c -> cycle-test-a" in errors[0]
    assert result.stdout.count("ok: ") == 100
    run = orc("run", "code-review", "some code", cwd=project)
    assert run.code in (2, 3) and "Traceback" not in run.stderr
    assert "orc: error:" in run.stderr


def test_unusable_input_with_retries_fails_cleanly_instead_of_stalling(orc):
    write(orc.work, "empty.py", "print('{}')\n")
    write(orc.work, "s.yaml", """\
        name: s
        agents:
          - {name: a, script: empty.py}
          - {name: b, script: empty.py, depends_on: [a], input_key: missing, retries: 2}
          - {name: c, script: empty.py, depends_on: [a], fan_out: true, retries: 1}
        """)
    result = orc("run", "s.yaml", "hi", "--json")
    assert result.code == 1, result.stderr
    r = result.json()["results"]
    assert r["b"]["attempts"] == 1 and "input_key 'missing' not found" in r["b"]["error"]
    assert "fan_out needs a list to expand, got a mapping" in r["c"]["error"]


def test_runs_show_works_from_another_folder(orc, tmp_path):
    write(orc.work, "echo.py", "import json,sys\nprint(json.dumps({'ok': True}))\n")
    write(orc.work, "r.yaml", "name: r\nagents:\n  - {name: a, script: echo.py}\n")
    run_id = orc("run", "r.yaml", "x", "--json").json()["run_id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert orc("runs", "show", run_id, cwd=elsewhere).code == 0


def test_models_group_home_option_is_honoured(orc, tmp_path):
    other = tmp_path / "other-home"
    fake = tmp_path / "g.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    assert orc("models", "--home", str(other), "add", str(fake), "--id", "g-test").code == 0
    assert (other / "models" / "catalog.json").is_file()
    assert "g-test" not in orc("models").stdout


def test_required_tags_cannot_be_met_on_one_untagged_node(orc):
    write(orc.work, "t.yaml", "name: t\nagents:\n  - name: a\n    model: smollm2-135m-instruct\n"
                              "    placement: {require_tags: [gpu]}\n")
    result = orc("run", "t.yaml", "x")
    assert_one_clean_error(result, 3)
    assert "requires (gpu)" in result.stderr


def test_llm_orc_single_profile_files_are_read(orc, tmp_path):
    project = tmp_path / "proj"
    write(project, ".llm-orc/profiles/tiny.yaml", "name: tiny\nmodel: qwen3:0.6b\nprovider: ollama\n")
    write(project, ".llm-orc/config.yaml", "model_aliases:\n  'qwen3:0.6b': smollm2-135m-instruct\n")
    write(project, ".llm-orc/ensembles/use-tiny.yaml",
          "name: use-tiny\nagents:\n  - {name: a, model_profile: tiny, max_tokens: 4}\n")
    sub = project / "sub"
    sub.mkdir()
    result = orc("run", "use-tiny", "hello", "--json", cwd=sub)  # found by searching upwards
    assert result.code == 0, result.stderr
    assert result.json()["results"]["a"]["model"] == "smollm2-135m-instruct"
