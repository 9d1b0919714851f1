"""`orc run` and `orc runs show` on a vote and on the shipped cascade example: the real CLI, the
real embedded models, the journal on disk."""

from __future__ import annotations

import pytest
from support import write

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


POLL = """\
name: poll
agents:
  - name: answer
    model: smollm2-135m-instruct
    system_prompt: "Answer yes or no, then explain in one sentence."
    max_tokens: 24
    vote:
      samples: 4
      extract: '(?i)\\b(yes|no)\\b'
      temperature: 0.8
      models: [smollm2-135m-instruct, gemma3-270m]
"""


def test_a_vote_reports_its_ballots_and_runs_show_repeats_them(orc):
    write(orc.work, "poll.yaml", POLL)
    result = orc("run", "poll.yaml", "Is the Pacific larger than the Atlantic?", "--json", "--seed", "7")
    assert result.code == 0, result.stderr
    data = result.json()
    answer = data["results"]["answer"]
    vote = answer["vote"]
    assert sum(vote["ballots"].values()) + vote["abstained"] == 4 == vote["samples"]
    assert vote["models"] == ["smollm2-135m-instruct", "gemma3-270m"]
    assert set(vote["ballots"]) <= {"yes", "no"} and vote["ballots"][vote["winner"]] == max(vote["ballots"].values())
    shown = orc("runs", "show", data["run_id"])
    assert shown.code == 0, shown.stderr
    assert "      vote: " in shown.stdout and f"agreement {vote['agreement']} (majority" in shown.stdout
    again = orc("runs", "show", data["run_id"], "--json").json()
    assert again["results"]["answer"]["vote"] == vote


def test_the_cascade_example_reports_the_levels_it_tried(orc):
    result = orc("run", "cascade-sentiment", "--json", "--seed", "7")
    assert result.code == 0, result.stderr
    record = result.json()["results"]["sentiment"]
    cascade = record["cascade"]
    first = cascade["levels"][0]
    assert first["model"] == "smollm2-135m-instruct" and 0 <= first["agreement"] <= 1
    if first["accepted"]:
        assert (cascade["level"], cascade["tried"]) == (0, 1) and first["agreement"] >= 0.67
        assert record["vote"]["samples"] == 3
    else:
        assert (cascade["level"], cascade["tried"]) == (1, 2)
        assert cascade["levels"][1] == {"model": "gemma3-270m", "accepted": True} and "vote" not in record
    shown = orc("runs", "show", result.json()["run_id"])
    assert f"cascade: level {cascade['level']} accepted, {cascade['tried']} tried" in shown.stdout
