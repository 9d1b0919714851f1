"""Parallel agents decoded together give, greedy (or seeded), the same outputs as one at a time.

The same ensemble runs through the real `orc run` twice: with `admission: slots: 4` (its five
parallel agents share one llama.cpp context, joining and leaving the batch at different steps,
two of them sharing a system prompt) and with `slots: 1` (one generation at a time). Every agent
has its own sampling settings; every output must be the same text in both runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMOL = "smollm2-135m-instruct"
SHARED = "You are a careful analyst of home computing. Answer in one short paragraph."

MIXED = f"""\
name: mixed
agents:
  - name: plain
    model: {SMOL}
    system_prompt: "{SHARED}"
    temperature: 0
    max_tokens: 48
  - name: stopper
    model: {SMOL}
    system_prompt: "{SHARED}"
    temperature: 0
    max_tokens: 64
    options: {{stop: ["."]}}
  - name: nucleus
    model: {SMOL}
    system_prompt: "You are a poet who writes about machines."
    temperature: 0
    max_tokens: 32
    options: {{top_p: 0.5, seed: 7}}
  - name: seeded
    model: {SMOL}
    system_prompt: "You are an inventor. Propose one odd idea."
    temperature: 0.9
    max_tokens: 40
    options: {{seed: 3}}
  - name: short
    model: {SMOL}
    system_prompt: "Answer with one word."
    temperature: 0
    max_tokens: 4
  - name: judge
    model: {SMOL}
    system_prompt: "You are a judge. Say which answer is most useful, in one sentence."
    temperature: 0
    max_tokens: 24
    depends_on: [plain, stopper, nucleus, seeded, short]
"""


def run(home: Path, work: Path, slots: int) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(f"admission:\n  slots: {slots}\n")
    env = {**os.environ, "ORC_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "orc.node.cli.orc", "run", str(work / "mixed.yaml"),
                           "A Raspberry Pi, an old laptop and a Mac mini share a home network.",
                           "--json", "--threads", "2"],
                          env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_batched_and_one_at_a_time_give_the_same_outputs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mixed.yaml").write_text(MIXED)
    batched = run(tmp_path / "batched", work, slots=4)
    serial = run(tmp_path / "serial", work, slots=1)
    for result in (batched, serial):
        assert result["status"] == "completed", result
    texts = {name: r["output"] for name, r in batched["results"].items()}
    assert {name: r["output"] for name, r in serial["results"].items()} == texts
    assert all(texts.values())  # every agent said something
    assert "." not in texts["stopper"]  # its stop string cut it
    assert batched["results"]["short"]["usage"]["completion_tokens"] <= 4
