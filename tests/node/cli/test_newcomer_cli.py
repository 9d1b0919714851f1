"""`orc` as someone new to it meets it: versions, typos, paths, YAML mistakes, listings, counts,
times, run ids. The real CLI in a subprocess, scripts only (no model runs here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version

from support import assert_one_clean_error, write

from orc.node.cli.peers import peers_table
from orc.node.cli.phrasing import ago, cut, duration, plural
from orc.node.protocol.messages import PeerView

ECHO = """\
import json, sys
req = json.load(sys.stdin)
print(json.dumps({"echo": req["input_data"]}))
"""
UNIX_TIME = re.compile(r"\b1[5-9]\d{8}(\.\d+)?\b")  # a unix time of 2017-2033, printed as a number


def test_both_programs_print_their_version(home):
    expected = version("orc-mesh")
    for module, name in (("orc", "orc"), ("orc_node", "orc-node")):
        done = subprocess.run([sys.executable, "-m", f"orc.node.cli.{module}", "--version"], capture_output=True,
                              text=True, env={**os.environ, "ORC_HOME": str(home)}, timeout=60)
        assert done.returncode == 0 and done.stdout == f"{name} {expected}\n", done.stderr


def test_a_mistyped_ensemble_name_gets_a_suggestion(orc):
    result = orc("run", "triag", "x")
    assert_one_clean_error(result, 2)
    assert "ensemble 'triag' not found" in result.stderr and "did you mean 'triage'?" in result.stderr


def test_name_dot_yaml_falls_back_to_the_name(orc):
    result = orc("plan", "triage.yaml", "--json")  # no triage.yaml here: the library's triage
    assert result.code == 0, result.stderr
    assert result.json()["ensemble"] == "triage"
    missing = orc("plan", "nothing-like-it.yaml")
    assert_one_clean_error(missing, 2)
    assert "no file nothing-like-it.yaml, and no ensemble named 'nothing-like-it'" in missing.stderr


def test_a_missing_path_is_reported_as_a_path(orc):
    for reference in ("./small.yaml", "sub/small.yaml", "../small"):
        result = orc("run", reference, "x")
        assert_one_clean_error(result, 2)
        assert f"no file {reference} (" in result.stderr, result.stderr
        assert "looked in" not in result.stderr  # not a library search


def test_watching_an_unknown_agent_is_an_error_that_names_the_agents(orc):
    result = orc("run", "triage", "x", "--watch", "clasify")
    assert_one_clean_error(result, 2)
    assert "did you mean 'classify'?" in result.stderr
    assert "(4 agents: classify, explain-code, answer-prose, polish)" in result.stderr
    # A nested or fan-out agent under a known one is accepted (it streams when it runs).
    write(orc.work, "echo.py", ECHO)
    write(orc.work, "e.yaml", "name: e\nagents:\n  - {name: only, script: echo.py}\n")
    ok = orc("run", "e.yaml", "x", "--watch", "only[0]", "--json")
    assert ok.code == 0, ok.stderr


def test_a_tab_in_yaml_says_to_indent_with_spaces_and_where(orc):
    write(orc.work, "tabbed.yaml", "name: t\nagents:\n\t- {name: a, script: echo.py}\n")
    result = orc("ensembles", "validate", "tabbed.yaml")
    assert result.code == 2
    assert "tabbed.yaml: invalid YAML at line 3, column 1" in result.stderr
    assert "(indent with spaces, not tabs)" in result.stderr


def test_ensembles_list_marks_invalid_ones_and_cuts_between_words(orc):
    long = "Reads every file of a project and writes a summary of each module " * 3
    write(orc.work, "ensembles/long.yaml", f"name: long\ndescription: {long}\nagents:\n  - {{name: a, script: x.py}}\n")
    write(orc.work, "ensembles/broken.yaml", "name: broken\nagents:\n  - {name: a, modle: m}\n")
    result = orc("ensembles", "list")
    assert result.code == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert re.match(r"broken\s+INVALID  agent 'a': unknown key 'modle'", rows["broken"]), rows["broken"]
    assert re.match(r"long\s+1 agent  Reads every file", rows["long"]), rows["long"]
    summary = rows["long"].split("1 agent  ", 1)[1]
    assert summary.endswith("…") and len(summary) <= 80
    assert long.startswith(summary[:-1] + " ")  # the cut is at a word boundary
    assert "4 agents" in rows["triage"]
    data = {row["name"]: row for row in orc("ensembles", "list", "--json").json()}
    assert data["broken"]["valid"] is False and data["long"]["description"] == long.strip()


def test_an_ambiguous_run_prefix_lists_the_candidates(orc, home):
    write(orc.work, "echo.py", ECHO)
    write(orc.work, "e.yaml", "name: e\nagents:\n  - {name: only, script: echo.py}\n")
    assert orc("run", "e.yaml", "x", "-q").code == 0
    (journal,) = (home / "runs").glob("*.journal")
    twins = [home / "runs" / f"abc{i}{journal.stem[4:]}.journal" for i in (1, 2)]
    for twin in twins:
        shutil.copy(journal, twin)
    result = orc("runs", "show", "abc")
    assert_one_clean_error(result, 2)
    assert f"'abc' starts 2 run ids: {twins[0].stem}, {twins[1].stem}; give more of the id" in result.stderr
    assert orc("runs", "show", "a*c").code == 2  # a prefix is not a pattern


def test_times_are_dates_or_relative_never_unix_numbers(orc, home):
    write(orc.work, "echo.py", ECHO)
    write(orc.work, "e.yaml", "name: e\nagents:\n  - {name: only, script: echo.py}\n")
    ran = orc("run", "e.yaml", "x")
    assert ran.code == 0
    assert not UNIX_TIME.search(ran.stderr)
    listed = orc("runs", "list").stdout
    run_id = listed.split()[0]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listed) and "1/1 agent " in listed
    shown = orc("runs", "show", run_id).stdout
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, finished", shown)
    for text in (listed, shown):
        assert not UNIX_TIME.search(text.replace(run_id, "")), text
    peer = PeerView(description=None, state="verified", address="10.0.0.2:7733", last_seen=1_700_000_000.0,
                    verified=True, missed_beats=0, node_id="p" * 20)
    (_, row) = peers_table((peer,), now=1_700_000_000.0 + 7200)
    assert row.endswith("2h ago") and not UNIX_TIME.search(row)


def test_phrasing():
    assert [plural(n, "agent") for n in (0, 1, 2)] == ["0 agents", "1 agent", "2 agents"]
    assert [duration(s) for s in (0.25, 59.9, 61, 3725, 90000)] == ["0.2s", "59.9s", "1m 01s", "1h 02m", "1d 1h"]
    now = 1_700_000_000.0
    assert [ago(now - d, now) for d in (0.2, 5, 300, 7200, 172800)] == ["just now", "5s ago", "5m ago", "2h ago",
                                                                        "2d ago"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", ago(now - 30 * 86400, now))
    assert cut("short", 10) == "short"
    assert cut("one two three four", 12) == "one two…"
    assert cut("x" * 20, 10) == "x" * 9 + "…"
