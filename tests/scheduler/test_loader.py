"""Ensemble loading: every structural problem reported at once, with file, agent and fix."""

from pathlib import Path

import pytest

from orc.scheduler.ensemble import DispatchTask, EnsembleTask, LlmTask, LoopTask, ScriptTask
from orc.scheduler.errors import EnsembleInvalid, EnsembleNotFound
from orc.scheduler.loader import EnsembleLibrary, load_ensemble, unresolved_references
from orc.scheduler.values import thaw


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path, library: EnsembleLibrary | None = None) -> list[str]:
    with pytest.raises(EnsembleInvalid) as caught:
        load_ensemble(path, library)
    return [str(p) for p in caught.value.problems]


def test_full_key_set_loads_into_frozen_spec(tmp_path):
    write(tmp_path, "child.yaml", "name: child\nagents:\n  - name: c\n    model: m\n")
    path = write(tmp_path, "e.yaml", """
name: full
description: every key
default_task: hello
agents:
  - name: a
    model_profile: fast
    system_prompt: be brief
    temperature: 0.1
    max_tokens: 12
    options: {think: false}
    timeout_seconds: 5
    retries: 1
    placement: {local_only: true, require_tags: [gpu], prefer_tags: fast}
  - name: s
    script: s.py
    parameters: {n: 3, nested: {k: [1, 2]}}
    depends_on: [{agent_name: a}]
  - name: fan
    depends_on: [s]
    fan_out: true
    input_key: items
    model: m
    provider: ollama
  - name: guarded
    depends_on: [s]
    when: ${s.flag} == yes
    ensemble: child
  - name: dyn
    depends_on: [s]
    dispatch: ${s.target}
    input_scope: dependencies
  - name: looped
    loop: {body: child, until: "${c.done}", max_iterations: 3, carry: "${c.next}"}
    output_format: json
""")
    spec = load_ensemble(path)
    assert spec.name == "full" and spec.default_task == "hello"
    a, s, fan, guarded, dyn, looped = spec.agents
    assert isinstance(a.task, LlmTask) and a.task.model_profile == "fast" and a.task.max_tokens == 12
    assert a.placement.local_only and a.placement.require_tags == {"gpu"} and a.placement.prefer_tags == {"fast"}
    assert a.retries == 1 and a.timeout_seconds == 5
    assert isinstance(s.task, ScriptTask) and thaw(s.task.parameters) == {"n": 3, "nested": {"k": [1, 2]}}
    assert s.depends_on == ("a",)
    assert fan.fan_out and fan.input_key == "items"
    assert isinstance(guarded.task, EnsembleTask) and str(guarded.when) == "${s.flag} == 'yes'"
    assert isinstance(dyn.task, DispatchTask) and dyn.input_scope == "dependencies"
    assert isinstance(looped.task, LoopTask) and looped.task.max_iterations == 3
    assert spec.child("child") is not None and spec.sinks() == ("fan", "guarded", "dyn", "looped")
    with pytest.raises(AttributeError):
        spec.name = "changed"  # frozen


def test_every_problem_reported_at_once(tmp_path):
    path = write(tmp_path, "bad.yaml", """
name: bad
agents:
  - name: a
    model: m
    sytem_prompt: typo
  - name: b
    depends_on: [a, ghost]
    temperature: hot
  - name: c
    fan_out: true
    model: m
  - name: a
    model: m
""")
    found = problems_of(path)
    text = "\n".join(found)
    assert "unknown key 'sytem_prompt'" in text and "did you mean 'system_prompt'" in text
    assert "depends on unknown agent 'ghost'" in text
    assert "'temperature' must be a number" in text
    assert "'fan_out' needs 'depends_on'" in text
    assert "duplicate agent name" in text
    assert all(str(path) in line for line in found)
    assert len(found) >= 5


def test_cycle_is_named_as_a_path(tmp_path):
    path = write(tmp_path, "cycle.yaml", """
name: cyc
agents:
  - {name: a, model: m, depends_on: [c]}
  - {name: b, model: m, depends_on: [a]}
  - {name: c, model: m, depends_on: [b]}
""")
    (problem,) = problems_of(path)
    assert "dependency cycle: a -> c -> b -> a" in problem


def test_when_must_refer_to_a_dependency(tmp_path):
    path = write(tmp_path, "w.yaml", """
name: w
agents:
  - {name: a, model: m}
  - {name: b, model: m, when: "${a.ok}"}
""")
    (problem,) = problems_of(path)
    assert "not in its depends_on" in problem and "add 'a' to depends_on" in problem


@pytest.mark.parametrize("when", ["a.ok", "${a.ok} >= high", "${a.ok} < \"3\"", "${}", "${a.ok} == [1]", "${a.ok} =< 3"])
def test_malformed_guards_are_refused(tmp_path, when):
    path = write(tmp_path, "w.yaml", f"name: w\nagents:\n  - {{name: a, model: m}}\n"
                                     f"  - {{name: b, model: m, depends_on: [a], when: '{when}'}}\n")
    assert any("invalid 'when'" in p for p in problems_of(path))


def test_loop_must_be_bounded(tmp_path):
    write(tmp_path, "body.yaml", "name: body\nagents:\n  - {name: x, model: m}\n")
    path = write(tmp_path, "l.yaml", "name: l\nagents:\n  - name: r\n    loop: {body: body, until: '${x.ok}'}\n")
    assert any("max_iterations" in p and "bounded" in p for p in problems_of(path))


def test_nested_ensemble_cycle_is_named(tmp_path):
    write(tmp_path, "one.yaml", "name: one\nagents:\n  - {name: x, ensemble: two}\n")
    write(tmp_path, "two.yaml", "name: two\nagents:\n  - {name: y, ensemble: one}\n")
    found = problems_of(tmp_path / "one.yaml")
    assert any("nested ensembles form a cycle: one -> two -> one" in p for p in found)


def test_nesting_depth_is_limited(tmp_path):
    for i in range(12):
        write(tmp_path, f"n{i}.yaml", f"name: n{i}\nagents:\n  - {{name: x, ensemble: n{i + 1}}}\n")
    write(tmp_path, "n12.yaml", "name: n12\nagents:\n  - {name: x, model: m}\n")
    assert any("nest deeper than" in p for p in problems_of(tmp_path / "n0.yaml"))


def test_missing_nested_ensemble_loads_and_is_listed_as_unresolved(tmp_path):
    path = write(tmp_path, "p.yaml", "name: p\nagents:\n  - {name: x, ensemble: nowhere}\n")
    spec = load_ensemble(path)
    assert unresolved_references(spec) == ((path, "x", "nowhere"),)


def test_dotted_names_are_refused_because_references_split_on_dots(tmp_path):
    path = write(tmp_path, "d.yaml", "name: d\nagents:\n  - {name: v1.2, model: m}\n")
    assert any("invalid name 'v1.2'" in p for p in problems_of(path))


def test_unknown_top_level_keys_warn(tmp_path):
    path = write(tmp_path, "t.yaml", "name: t\nserves: x\nseat_contract: {}\nagents:\n  - {name: a, model: m}\n")
    spec = load_ensemble(path)
    assert len([w for w in spec.warnings if "unknown top-level key" in w]) == 2


def test_ship_scripts_is_off_unless_the_file_says_true(tmp_path):
    plain = load_ensemble(write(tmp_path, "p.yaml", "name: p\nagents:\n  - {name: a, script: s.py}\n"))
    shipped = load_ensemble(write(tmp_path, "s.yaml", "name: s\nship_scripts: true\nagents:\n  - {name: a, script: s.py}\n"))
    assert (plain.ship_scripts, shipped.ship_scripts) == (False, True)
    assert not shipped.warnings  # a key orc knows, not an unknown one


@pytest.mark.parametrize("value", ["yes-please", "1", "[true]"])
def test_ship_scripts_must_be_a_boolean(tmp_path, value):
    path = write(tmp_path, "b.yaml", f"name: b\nship_scripts: {value}\nagents:\n  - {{name: a, script: s.py}}\n")
    assert any("'ship_scripts' must be true or false" in p for p in problems_of(path))


def test_library_resolves_by_file_name_then_declared_name(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, "deep/alpha.yaml", "name: alpha\nagents:\n  - {name: a, model: m}\n")
    write(second, "alpha.yaml", "name: alpha-shadowed\nagents:\n  - {name: a, model: m}\n")
    write(second, "file-name.yaml", "name: declared\nagents:\n  - {name: a, model: m}\n")
    library = EnsembleLibrary((first, second))
    assert library.resolve("alpha") == first / "deep" / "alpha.yaml"
    assert library.resolve("declared") == second / "file-name.yaml"
    with pytest.raises(EnsembleNotFound) as missing:
        library.resolve("nope")
    assert "available: alpha, file-name" in str(missing.value)


def test_git_symlink_stub_is_followed(tmp_path):
    write(tmp_path, "real/target.yaml", "name: target\nagents:\n  - {name: a, model: m}\n")
    stub = write(tmp_path, "stub.yaml", "real/target.yaml")
    assert load_ensemble(stub).name == "target"


def test_yaml_syntax_errors_name_file_line_column_and_the_fix(tmp_path):
    cases = {
        "name: t\nagents:\n\t- {name: a, model: m}\n": ("line 3, column 1", "indent with spaces, not tabs"),
        "name: t\ndescription: a: b\nagents: []\n": ("line 2, column 15", "put quotes around a value"),
        "name: t\nagents: [1, 2\n": ("line 3, column 1", "close the bracket or brace"),
        "name: 't\nagents: []\n": ("line 3, column 1", "close the quote"),
    }
    for text, (where, fix) in cases.items():
        path = write(tmp_path, "bad.yaml", text)
        with pytest.raises(EnsembleInvalid) as error:
            load_ensemble(path)
        (problem,) = error.value.problems
        assert problem.file == path and f"invalid YAML at {where}" in problem.message, problem
        assert problem.fix and problem.fix.startswith(fix), problem


def test_a_yaml_name_that_is_no_file_falls_back_to_the_name_and_a_path_does_not(tmp_path):
    library_folder, cwd = tmp_path / "lib", tmp_path / "cwd"
    write(library_folder, "review.yaml", "name: review\nagents:\n  - {name: a, model: m}\n")
    cwd.mkdir()
    library = EnsembleLibrary((library_folder,))
    assert library.resolve("review.yaml", cwd=cwd) == library_folder / "review.yaml"
    local = write(cwd, "review.yaml", "name: mine\nagents:\n  - {name: a, model: m}\n")
    assert library.resolve("review.yaml", cwd=cwd) == local  # a file of that name wins
    assert library.resolve("./review.yaml", cwd=cwd) == local  # relative to the caller, not the process
    with pytest.raises(EnsembleNotFound) as missing:
        library.resolve("./other.yaml", cwd=cwd)
    assert str(missing.value) == f"no file ./other.yaml ({cwd} has no 'other.yaml')"
    with pytest.raises(EnsembleNotFound) as typo:
        library.resolve("reveiw", cwd=cwd)
    assert "did you mean 'review'?" in str(typo.value)
