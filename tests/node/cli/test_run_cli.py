"""`orc run` end to end: the real CLI, real scripts, the real embedded model."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from support import write

ECHO = """\
import json, sys
req = json.load(sys.stdin)
print(json.dumps({"echo": req["input_data"], "deps": sorted(req["dependencies"]), "params": req["parameters"]}))
"""

SLEEP = """\
import json, sys, time
req = json.load(sys.stdin)
time.sleep(float(req["parameters"].get("seconds", 1)))
print(json.dumps({"slept": req["parameters"].get("seconds", 1), "agent": req["agent_name"]}))
"""


def journal_events(home: Path, run_id: str) -> list[dict]:
    with open(home / "runs" / f"{run_id}.journal", "rb") as stream:
        return list(msgpack.Unpacker(stream, raw=False))


@pytest.mark.parametrize("example", ["perspectives", "document-digest", "triage"])
def test_every_example_runs_on_the_embedded_model(orc, example):
    result = orc("run", example, "--json", "--seed", "7")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["status"] == "completed" and data["ensemble"] == example
    assert set(data) >= {"run_id", "ensemble", "status", "deliverable", "results", "timing"}
    llm = [r for r in data["results"].values() if r["model"]]
    assert llm and all(r["model"] == "smollm2-135m-instruct" for r in llm)
    for record in data["results"].values():
        assert set(record) == {"status", "output", "node_id", "nodes", "model", "attempts", "started_at", "finished_at",
                               "usage", "error"}
        if record["status"] == "completed" and record["model"]:
            assert record["usage"]["completion_tokens"] > 0 and record["output"]
    assert isinstance(data["deliverable"], str) and data["deliverable"].strip()


def test_triage_takes_the_code_branch_and_skips_the_other(orc):
    data = orc("run", "triage", "def f(x): return x + 1", "--json").json()
    assert data["results"]["classify"]["output"]["is_code"] is True
    assert data["results"]["answer-prose"]["status"] == "skipped"
    assert data["results"]["explain-code"]["status"] == "completed"


def test_progress_and_deliverable_streams(orc):
    result = orc("run", "perspectives", "Is a Pi a good home server?", "--watch", "optimist")
    assert result.code == 0
    assert "▶ optimist on local · smollm2-135m-instruct" in result.stderr
    assert "┌ optimist" in result.stderr  # the watched agent's tokens are streamed
    assert "✓ synthesizer" in result.stderr and "completed in" in result.stderr
    assert result.stdout.strip() and "▶" not in result.stdout


def test_input_precedence(orc):
    folder = orc.work
    write(folder, "echo.py", ECHO)
    write(folder, "e.yaml", "name: e\ndefault_task: from-default\nagents:\n  - {name: s, script: echo.py}\n")
    (folder / "in.txt").write_text("from-file")

    def echoed(*args, stdin=None):
        result = orc("run", "e.yaml", *args, "--json", stdin=stdin)
        assert result.code == 0, result.stderr
        return result.json()["deliverable"]["echo"]

    assert echoed("positional", "--input", "opt", "-f", "in.txt", stdin="piped") == "positional"
    assert echoed("--input", "opt", "-f", "in.txt", stdin="piped") == "opt"
    assert echoed("-f", "in.txt", stdin="piped") == "from-file"
    assert echoed(stdin="piped") == "piped"
    assert echoed() == "from-default"


def test_dependency_driven_start_and_snapshots(orc):
    folder = orc.work
    write(folder, "sleep.py", SLEEP)
    write(folder, "echo.py", ECHO)
    write(folder, "d.yaml", """\
        name: d
        agents:
          - {name: quick, script: sleep.py, parameters: {seconds: 0.1}}
          - {name: slow, script: sleep.py, parameters: {seconds: 2.5}}
          - {name: after-quick, script: echo.py, depends_on: [quick]}
          - {name: end, script: echo.py, depends_on: [slow, after-quick]}
        """)
    data = orc("run", "d.yaml", "x", "--json").json()
    r = data["results"]
    # after-quick must not wait for 'slow', which is on quick's level.
    assert r["after-quick"]["started_at"] < r["slow"]["finished_at"]
    assert r["end"]["started_at"] >= r["slow"]["finished_at"]
    assert r["after-quick"]["output"]["deps"] == ["quick"]
    assert r["end"]["output"]["deps"] == ["after-quick", "slow"]


def test_failure_is_isolated_timeouts_and_retries(orc):
    folder = orc.work
    write(folder, "sleep.py", SLEEP)
    write(folder, "flaky.py", """\
        import json, pathlib, sys
        marker = pathlib.Path("flaky.count")
        n = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(n + 1))
        if n == 0:
            sys.exit("first attempt fails")
        print(json.dumps({"attempt": n + 1}))
        """)
    write(folder, "broken.py", "import sys\nsys.stderr.write('kaput\\n')\nsys.exit(3)\n")
    write(folder, "f.yaml", """\
        name: f
        agents:
          - {name: stuck, script: sleep.py, parameters: {seconds: 30}, timeout_seconds: 1}
          - {name: broken, script: broken.py}
          - {name: flaky, script: flaky.py, retries: 1}
          - name: summary
            depends_on: [stuck, broken, flaky]
            model: smollm2-135m-instruct
            max_tokens: 8
        """)
    began = time.monotonic()
    result = orc("run", "f.yaml", "go", "--json")
    assert time.monotonic() - began < 25  # the 30 s sleeper was killed at its timeout
    assert result.code == 1
    data = result.json()
    assert data["status"] == "completed_with_errors"
    r = data["results"]
    assert r["stuck"]["status"] == "failed"
    assert r["stuck"]["error"] == "timed out after 1 s (timeout_seconds: 1 of agent 'stuck' in f.yaml)"
    assert r["broken"]["status"] == "failed" and "kaput" in r["broken"]["error"]
    assert r["flaky"]["status"] == "completed" and r["flaky"]["attempts"] == 2
    assert r["summary"]["status"] == "completed"


def test_journal_records_the_run_and_runs_show_renders_it(orc, home):
    data = orc("run", "triage", "Why is the sea salty?", "--json").json()
    kinds = [e["t"] for e in journal_events(home, data["run_id"])]
    assert kinds[0] == "run" and kinds[-1] == "end" and kinds.count("ok") == 3 and kinds.count("skip") == 1
    listed = orc("runs", "list")
    assert data["run_id"] in listed.stdout and "completed" in listed.stdout
    shown = orc("runs", "show", data["run_id"][:8])
    assert shown.code == 0 and "answer-prose: completed" in shown.stdout and "explain-code: skipped" in shown.stdout
    as_json = orc("runs", "show", data["run_id"], "--json").json()
    assert as_json["results"]["polish"]["output"] == data["results"]["polish"]["output"]


def test_killed_run_resumes_without_recomputing(orc, home):
    folder = orc.work
    write(folder, "count.py", """\
        import json, os, pathlib, sys, time
        req = json.load(sys.stdin)
        name = req["agent_name"]
        log = pathlib.Path("ran.log")
        pathlib.Path(name + ".pid").write_text(str(os.getpid()))  # before the log, which the test watches
        with log.open("a") as f:
            f.write(name + "\\n")
        time.sleep(float(req["parameters"].get("seconds", 0)))
        print(json.dumps({"agent": name}))
        """)
    write(folder, "k.yaml", """\
        name: k
        agents:
          - {name: first, script: count.py}
          - {name: long, script: count.py, depends_on: [first], parameters: {seconds: 60}}
          - {name: last, script: count.py, depends_on: [long]}
        """)
    env = {**os.environ, "ORC_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc", "run", "k.yaml", "in", "-q"],
                               cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = folder / "ran.log"
        if log.exists() and "long" in log.read_text():
            break
        time.sleep(0.1)
    (run_id,) = [p.stem for p in (home / "runs").glob("*.journal")]
    try:
        assert orc("runs", "list", "--json").json()[0]["status"] == "running"  # its process runs it
        assert orc("runs", "show", run_id).stdout.splitlines()[0].endswith("  running")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # A killed process cannot stop the script it started (in its own session): this test does.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int((folder / "long.pid").read_text()), signal.SIGKILL)
    assert orc("runs", "list", "--json").json()[0]["status"] == "interrupted"
    shown = orc("runs", "show", run_id).stdout
    assert f"interrupted (resume with 'orc runs resume {run_id}')" in shown.splitlines()[0]
    assert "  - long: interrupted" in shown and "  - last: interrupted" in shown
    assert "  - first: completed" in shown and "running" not in shown and "pending" not in shown
    statuses = {name: r["status"] for name, r in orc("runs", "show", run_id, "--json").json()["results"].items()}
    assert statuses == {"first": "completed", "long": "interrupted", "last": "interrupted"}
    # Make the long agent quick on resume, as a user fixing the cause would.
    write(folder, "k.yaml", (folder / "k.yaml").read_text().replace("seconds: 60", "seconds: 0"))
    resumed = orc("runs", "resume", run_id, "--json")
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["status"] == "completed" and resumed.json()["run_id"] == run_id
    assert (folder / "ran.log").read_text().split() == ["first", "long", "long", "last"]  # 'first' not recomputed
    # Finished: nothing to do, and nothing loaded (a model no node has does not matter now).
    write(folder, "k.yaml", (folder / "k.yaml").read_text().replace("script: count.py, depends_on: [long]",
                                                                    "model: no-such-model, depends_on: [long]"))
    again = orc("runs", "resume", run_id[:6])
    assert again.code == 0, again.stderr
    assert f"run {run_id} (k) completed" in again.stderr and "nothing to resume" in again.stderr
    assert (folder / "ran.log").read_text().split() == ["first", "long", "long", "last"]


def test_nested_ensemble_loop_dispatch_and_fan_out_with_scripts(orc):
    folder = orc.work
    write(folder, "scripts/step.py", """\
        import json, sys
        req = json.load(sys.stdin)
        data = req["input_data"]
        n = data.get("n", 0) if isinstance(data, dict) else 0
        print(json.dumps({"n": n + 1, "done": n + 1 >= 3, "next": {"n": n + 1}}))
        """)
    write(folder, "scripts/route.py", """\
        import json, sys
        print(json.dumps({"target": "inner", "items": ["a", "b", "c"]}))
        """)
    write(folder, "scripts/upper.py", """\
        import json, sys
        req = json.load(sys.stdin)
        print(json.dumps({"value": str(req["input_data"]).upper()}))
        """)
    write(folder, "inner.yaml", "name: inner\nagents:\n  - {name: up, script: scripts/upper.py}\n")
    write(folder, "counter.yaml", "name: counter\nagents:\n  - {name: step, script: scripts/step.py}\n")
    write(folder, "outer.yaml", """\
        name: outer
        agents:
          - {name: route, script: scripts/route.py}
          - {name: each, depends_on: [route], input_key: items, fan_out: true, ensemble: inner}
          - {name: chosen, depends_on: [route], dispatch: "${route.target}"}
          - name: count
            loop: {body: counter, until: "${step.done}", max_iterations: 5, carry: "${step.next}"}
        """)
    result = orc("run", "outer.yaml", "hello", "--json")
    assert result.code == 0, result.stderr
    r = result.json()["results"]
    assert [item["value"] for item in r["each"]["output"]] == ["A", "B", "C"]
    assert r["chosen"]["output"]["value"] == "HELLO"
    assert r["count"]["output"]["iterations"] == 3 and r["count"]["output"]["converged"] is True


def test_local_only_and_explain(orc):
    result = orc("run", "triage", "hello there", "--explain", "-q")
    assert result.code == 0
    assert "  classify  (script)" in result.stderr and "  explain-code  [smollm2-135m-instruct]" in result.stderr
    assert "placement for triage (estimated finish from now; coordinator: local):" in result.stderr


def test_the_second_run_finds_the_models_probes_kept(orc, home):
    """The first load of a model probes its numbers on this CPU and keeps the answers in the
    home; the next run's runner finds them under the same key instead of probing again."""
    folder = orc.work
    write(folder, "one.yaml", """\
        name: one
        agents:
          - {name: a, model: smollm2-135m-instruct, temperature: 0, max_tokens: 4}
        """)
    first = orc("run", "one.yaml", "Name a color.", "--json", "--seed", "1")
    assert first.code == 0, first.stderr
    kept = json.loads((home / "llama-probes.json").read_text())
    assert len(kept) == 1
    (entry,) = kept.values()
    assert 1 <= entry["exact_rows"] <= 16 and isinstance(entry["thread_invariant"], bool)
    second = orc("run", "one.yaml", "Name a color.", "--json", "--seed", "1")
    assert second.code == 0, second.stderr
    assert json.loads((home / "llama-probes.json").read_text()) == kept  # found, not written again
    assert second.json()["results"]["a"]["output"] == first.json()["results"]["a"]["output"]
