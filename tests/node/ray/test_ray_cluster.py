"""The same ensembles on a real local Ray cluster: a head serving nothing, a worker with two
actors' worth of smollm2, a worker without it (`ray_cluster.py`), driven by the real `orc`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import MODEL, LocalCluster, free_port

pytestmark = pytest.mark.slow

# Greedy and one CPU thread in both places: the in-process run and the actors then decode the
# same way, so their answers must be equal token for token.
CHAIN = f"""\
name: chain
agents:
  - name: facts
    model: {MODEL}
    system_prompt: List three facts about the topic, one short line each.
    temperature: 0
    max_tokens: 40
  - name: summary
    depends_on: [facts]
    model: {MODEL}
    system_prompt: Summarise what you are given in one sentence.
    temperature: 0
    max_tokens: 30
  - name: shout
    depends_on: [summary]
    script: shout.py
"""
# Greedy smollm2 writes the whole 300 tokens to this (about 10 s on one thread): time to kill
# or cancel it mid-generation.
STORY = "Tell me a very long story about a dragon who learns to cook, with many chapters."
SHOUT = """\
import json, os, sys
data = json.load(sys.stdin)
print(json.dumps({"text": str(data).upper()[:40], "submitter": os.environ.get("SUBMITTER_ONLY")}))
"""


def orc_cli(cluster: LocalCluster, cwd: Path, *args: str, timeout: float = 400,
            home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(cluster.env, SUBMITTER_ONLY="yes")  # in the command's environment, not the workers'
    if home is not None:
        env["ORC_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "orc.node.cli.orc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-work")
    (folder / "chain.yaml").write_text(CHAIN)
    (folder / "shout.py").write_text(SHOUT)
    (folder / "gemma.yaml").write_text("name: gemma\nagents:\n  - name: a\n    model: gemma3-270m\n    max_tokens: 8\n")
    return folder


def test_an_ensemble_on_ray_gives_the_in_process_answers(ray_cluster: LocalCluster, work: Path) -> None:
    here = orc_cli(ray_cluster, work, "run", "chain.yaml", "octopuses", "--local", "--json", "--threads", "1")
    assert here.returncode == 0, here.stderr
    there = orc_cli(ray_cluster, work, "run", "chain.yaml", "octopuses", "--on", ray_cluster.address,
                    "--json", "--threads", "1")
    assert there.returncode == 0, there.stderr
    local, remote = json.loads(here.stdout), json.loads(there.stdout)
    assert set(remote) == set(local) and remote["status"] == "completed"
    for agent in ("facts", "summary"):
        assert remote["results"][agent]["output"] == local["results"][agent]["output"]
        assert remote["results"][agent]["output"].strip()
        assert remote["results"][agent]["node_id"].startswith(f"orc:{MODEL}:")  # an actor ran it
    # The script ran where the command runs (the submitting machine), not on a Ray worker.
    assert remote["results"]["shout"]["output"]["submitter"] == "yes"
    # Journaled in this home like any run: `orc runs show` reads it back, each agent on an actor.
    shown = orc_cli(ray_cluster, work, "runs", "show", remote["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "completed"
    assert any(p.name.startswith(remote["run_id"]) for p in ray_cluster.home.rglob("*.journal"))


WHERE = """\
import json, os, sys
data = json.load(sys.stdin)
parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
if data["input_data"] == "fail":
    print("boom from a worker", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"cwd": os.getcwd(), "parent": parent, "submitter": os.environ.get("SUBMITTER_ONLY"),
                  "got": data["input_data"]}))
"""


def test_an_ensemble_that_allows_it_ships_its_scripts_to_a_worker(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(WHERE)
    (tmp_path / "kept.yaml").write_text("name: kept\nagents:\n  - {name: w, script: where.py}\n")
    (tmp_path / "shipped.yaml").write_text("name: shipped\nship_scripts: true\nagents:\n  - {name: w, script: where.py}\n")
    kept = orc_cli(ray_cluster, tmp_path, "run", "kept.yaml", "hello", "--on", ray_cluster.address, "--json")
    assert kept.returncode == 0, kept.stderr
    here = json.loads(kept.stdout)["results"]["w"]["output"]
    assert here["submitter"] == "yes" and here["cwd"] == str(tmp_path)  # the driver's machine and folder
    shipped = orc_cli(ray_cluster, tmp_path, "run", "shipped.yaml", "hello", "--on", ray_cluster.address, "--json")
    assert shipped.returncode == 0, shipped.stderr
    there = json.loads(shipped.stdout)["results"]["w"]["output"]
    # On a Ray worker: a process of Ray's started it, in a folder of its own, without the
    # driver's environment; its input arrived whole.
    assert there["got"] == "hello" and there["submitter"] is None
    assert Path(there["cwd"]).name.startswith("orc-script-") and not Path(there["cwd"]).exists()
    assert "ray" in there["parent"] and "orc.node.cli.orc" not in there["parent"]
    # `orc plan` says where each would run.
    plans = {name: orc_cli(ray_cluster, tmp_path, "plan", f"{name}.yaml", "x", "--on", ray_cluster.address, "--json")
             for name in ("kept", "shipped")}
    notes = {name: json.loads(done.stdout)["agents"]["w"]["note"] for name, done in plans.items()}
    assert "never leave the coordinator" in notes["kept"] and "a task on a worker" in notes["shipped"]
    # A shipped script that fails is one clear error naming its stderr, and the run exits 1.
    failed = orc_cli(ray_cluster, tmp_path, "run", "shipped.yaml", "fail", "--on", ray_cluster.address, "--json")
    assert failed.returncode == 1, failed.stderr
    result = json.loads(failed.stdout)["results"]["w"]
    assert result["status"] == "failed" and "boom from a worker" in result["error"]
    assert "Traceback" not in failed.stderr


def test_progress_names_the_actors(ray_cluster: LocalCluster, work: Path) -> None:
    done = orc_cli(ray_cluster, work, "run", "perspectives", "--on", ray_cluster.address, "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert f"orc:{MODEL}:" in done.stderr  # the progress view shows where each agent runs


@pytest.mark.parametrize(("ensemble", "text"), [
    ("triage", "def mean(xs): return sum(xs) / len(xs)"),  # a script, then `when` picks the code branch
    ("document-digest", "Octopuses have three hearts.\n\nThey taste with their arms.\n\nTheir blood is blue."),
])
def test_the_examples_run_on_ray(ray_cluster: LocalCluster, work: Path, ensemble: str, text: str) -> None:
    done = orc_cli(ray_cluster, work, "run", ensemble, text, "--on", ray_cluster.address, "--json",
                   "--threads", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and result["deliverable"]
    generated = [r for r in result["results"].values() if r["model"] and r["status"] == "completed"]
    assert generated and all(r["node_id"].startswith(f"orc:{MODEL}:") for r in generated)
    if ensemble == "document-digest":  # one summarizer per paragraph, each on an actor
        assert len(next(r for r in result["results"].values() if isinstance(r["output"], list))["output"]) == 3


def test_tags_are_the_workers_orc_tag_resources(ray_cluster: LocalCluster, work: Path) -> None:
    for tag, code in (("lab", 0), ("gpu", 3)):
        (work / f"tagged-{tag}.yaml").write_text(f"""\
name: tagged
agents:
  - name: a
    model: {MODEL}
    temperature: 0
    max_tokens: 8
    placement: {{require_tags: [{tag}]}}
""")
        done = orc_cli(ray_cluster, work, "run", f"tagged-{tag}.yaml", "hi", "--on", ray_cluster.address, "--json")
        assert done.returncode == code, done.stderr
        if code == 3:
            assert "gpu" in done.stderr


def test_models_on_the_cluster(ray_cluster: LocalCluster, work: Path) -> None:
    done = orc_cli(ray_cluster, work, "models", "--on", ray_cluster.address, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["id"], r["actors"], r["tags"]) for r in rows] == [(MODEL, 2, ["lab"])]  # one worker serves it
    shown = orc_cli(ray_cluster, work, "models", "--on", ray_cluster.address)
    assert MODEL in shown.stdout and "(tags: lab)" in shown.stdout


def test_the_dashboard_lists_the_clusters_models(ray_cluster: LocalCluster) -> None:
    from orc.node.web.ray_view import RayView

    # What a daemon whose config names the cluster serves at /api/ray: the same rows, listed by
    # an `orc models --on` child (the daemon itself never imports Ray).
    answer = asyncio.run(RayView(ray_cluster.address).snapshot())
    assert answer["error"] is None and answer["address"] == ray_cluster.address
    assert [(r["id"], r["actors"], r["tags"], r["worker"].startswith("ray:")) for r in answer["models"]] == [
        (MODEL, 2, ["lab"], True)]


def test_the_config_sends_runs_to_the_cluster(ray_cluster: LocalCluster, work: Path, tmp_path: Path) -> None:
    home = tmp_path / "driver-home"
    home.mkdir()
    (home / "config.yaml").write_text(f"ray:\n  address: {ray_cluster.address}\n  threads: 1\n")
    there = orc_cli(ray_cluster, work, "run", "chain.yaml", "owls", "--json", home=home)
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout)["results"]["facts"]["node_id"].startswith(f"orc:{MODEL}:")
    here = orc_cli(ray_cluster, work, "run", "chain.yaml", "owls", "--json", "--local", "--threads", "1", home=home)
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout)["results"]["facts"]["node_id"] == "local"  # --local still means this machine
    both = orc_cli(ray_cluster, work, "run", "chain.yaml", "owls", "--local", "--on", ray_cluster.address, home=home)
    assert both.returncode == 2 and "--on and --local" in both.stderr


def test_a_model_no_worker_serves_exits_3(ray_cluster: LocalCluster, work: Path) -> None:
    done = orc_cli(ray_cluster, work, "run", "gemma.yaml", "hi", "--on", ray_cluster.address)
    assert done.returncode == 3, done.stderr
    assert "gemma3-270m" in done.stderr and MODEL in done.stderr  # what is missing, and what the cluster has
    # Said in the cluster's terms: a worker to start with the model's resource, not a node.
    assert "no live worker of the Ray cluster serves model 'gemma3-270m'" in done.stderr
    assert "orc-model:gemma3-270m" in done.stderr and "orc-node start" not in done.stderr


def test_an_unreachable_cluster_is_one_clear_error(ray_cluster: LocalCluster, work: Path) -> None:
    began = time.monotonic()
    done = orc_cli(ray_cluster, work, "run", "chain.yaml", "x", "--on", f"ray://127.0.0.1:{free_port()}", timeout=60)
    assert done.returncode == 3
    assert "no Ray cluster answers at ray://127.0.0.1:" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - began < 30
    bad = orc_cli(ray_cluster, work, "run", "chain.yaml", "x", "--on", "ray://nowhere")
    assert bad.returncode == 2 and "ray://HOST:PORT" in bad.stderr


def test_a_worker_killed_mid_generation_costs_a_retry_on_another_actor(ray_cluster: LocalCluster,
                                                                       work: Path) -> None:
    from orc.node.api import Orc
    from orc.node.coordinator.placing import LocalPlacer
    from orc.node.protocol.events import AgentPlacedOn, RunFinished, TokenStreamed
    from orc.node.ray.cluster import Cluster, RaySettings
    from orc.node.ray.placer import DRIVER_ID, RayPlacer
    from orc.scheduler.journal import read_journal
    from orc.scheduler.run import AgentBound

    (work / "long.yaml").write_text(f"""\
name: long
agents:
  - name: counter
    model: {MODEL}
    system_prompt: You are a storyteller. Write long, detailed stories.
    temperature: 0
    max_tokens: 300
""")
    orc = Orc(ray_cluster.home, cwd=work)
    cluster = Cluster(RaySettings(ray_cluster.address, threads=1))
    cluster.connect()
    try:
        engine = orc.engine(placer=RayPlacer(cluster, LocalPlacer(orc.catalog, {}, DRIVER_ID)), node_id=DRIVER_ID)
        bound = engine.preflight(orc.load("long.yaml"))

        async def run() -> tuple[list[AgentPlacedOn], object, int]:
            placed: list[AgentPlacedOn] = []
            killed = 0
            async for event in engine.run(bound, STORY):
                if isinstance(event, AgentPlacedOn):
                    placed.append(event)
                if isinstance(event, TokenStreamed) and not killed and len(placed) == 1:
                    actor = cluster.warm(MODEL)[placed[0].node_id]
                    killed = actor.state.pid
                    os.kill(killed, signal.SIGKILL)  # the actor's worker process, mid-generation
                if isinstance(event, RunFinished):
                    return placed, event.result, killed
            raise AssertionError("no RunFinished")

        placed, result, killed = asyncio.run(asyncio.wait_for(run(), 300))
    finally:
        cluster.close()
    assert killed
    assert result.status == "completed", result
    assert len(placed) == 2 and placed[1].replaces and placed[0].node_id in placed[1].replaces
    assert placed[1].node_id != placed[0].node_id  # another actor, not the one restarting
    journal = read_journal(orc.journal_file(result.run_id))
    bindings = [e for e in journal.events if isinstance(e, AgentBound)]
    assert [b.failover for b in bindings] == [False, True]


def test_plan_shows_the_workers_that_would_serve(ray_cluster: LocalCluster, work: Path) -> None:
    done = orc_cli(ray_cluster, work, "plan", "chain.yaml", "x", "--on", ray_cluster.address, "--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)["agents"]["facts"]
    # One candidate: the worker with the model's resource (not the head, not the other worker).
    assert [c["node_id"] for c in facts["candidates"]] == [facts["choice"]]
    assert facts["candidates"][0]["name"].startswith("ray:") and facts["choice"][:8] in facts["candidates"][0]["name"]
    missing = orc_cli(ray_cluster, work, "plan", "gemma.yaml", "--on", ray_cluster.address)
    assert missing.returncode == 3


def test_a_runner_killed_mid_generation_costs_a_retry_on_another_actor(ray_cluster: LocalCluster,
                                                                       work: Path) -> None:
    from orc.node.api import Orc
    from orc.node.protocol.events import AgentPlacedOn, RunFinished, TokenStreamed
    from orc.node.ray.cluster import Cluster, RaySettings
    from orc.node.ray.placer import DRIVER_ID, RayPlacer

    (work / "long2.yaml").write_text(f"""\
name: long2
agents:
  - name: counter
    model: {MODEL}
    system_prompt: You are a storyteller. Write long, detailed stories.
    temperature: 0
    max_tokens: 300
""")
    orc = Orc(ray_cluster.home, cwd=work)
    cluster = Cluster(RaySettings(ray_cluster.address, threads=1))
    cluster.connect()
    try:
        engine = orc.engine(placer=RayPlacer(cluster), node_id=DRIVER_ID)
        bound = engine.preflight(orc.load("long2.yaml"))

        async def run() -> tuple[list[AgentPlacedOn], object, int | None]:
            placed: list[AgentPlacedOn] = []
            killed = None
            async for event in engine.run(bound, STORY):
                if isinstance(event, AgentPlacedOn):
                    placed.append(event)
                if isinstance(event, TokenStreamed) and killed is None and len(placed) == 1:
                    actor = cluster.warm(MODEL)[placed[0].node_id]
                    killed = (await actor.handle.state.remote()).runner_pid
                    os.kill(killed, signal.SIGKILL)  # the model's runner process, not the actor
                if isinstance(event, RunFinished):
                    return placed, event.result, killed
            raise AssertionError("no RunFinished")

        placed, result, killed = asyncio.run(asyncio.wait_for(run(), 300))
    finally:
        cluster.close()
    assert killed
    assert result.status == "completed", result
    assert len(placed) == 2 and "runner" in (placed[1].replaces or "") and placed[1].node_id != placed[0].node_id


def test_a_run_whose_driver_stopped_resumes_on_the_cluster(ray_cluster: LocalCluster, work: Path) -> None:
    from orc.node.api import Orc
    from orc.node.protocol.events import AgentEnded, RunBegan
    from orc.node.ray.cluster import Cluster, RaySettings
    from orc.node.ray.placer import DRIVER_ID, RayPlacer

    orc = Orc(ray_cluster.home, cwd=work)
    cluster = Cluster(RaySettings(ray_cluster.address, threads=1))
    cluster.connect()
    try:
        engine = orc.engine(placer=RayPlacer(cluster), node_id=DRIVER_ID)
        bound = engine.preflight(orc.load("chain.yaml"))

        async def until_facts() -> tuple[str, object]:
            run_id = ""
            events = engine.run(bound, "octopuses")
            async for event in events:
                if isinstance(event, RunBegan):
                    run_id = event.run_id
                if isinstance(event, AgentEnded) and event.agent == "facts":
                    await events.aclose()  # the driver goes away with `summary` running or about to
                    return run_id, event.record.output
            raise AssertionError("facts never ended")

        run_id, facts = asyncio.run(until_facts())
    finally:
        cluster.close()
    listed = orc_cli(ray_cluster, work, "runs", "show", run_id, "--json")
    assert json.loads(listed.stdout)["status"] == "interrupted"
    resumed = orc_cli(ray_cluster, work, "runs", "resume", run_id, "--on", ray_cluster.address, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["run_id"] == run_id and result["status"] == "completed"
    assert result["results"]["facts"]["output"] == facts
    from orc.scheduler.journal import read_journal
    from orc.scheduler.run import AgentSucceeded

    succeeded = [e.agent for e in read_journal(orc.journal_file(run_id)).events if isinstance(e, AgentSucceeded)]
    assert succeeded.count("facts") == 1 and succeeded.count("summary") == 1  # facts reused, not generated again
    assert result["results"]["summary"]["node_id"].startswith(f"orc:{MODEL}:")


def test_a_run_closed_early_stops_its_generation_on_the_actor(ray_cluster: LocalCluster, work: Path) -> None:
    from orc.node.api import Orc
    from orc.node.protocol.events import AgentPlacedOn, TokenStreamed
    from orc.node.ray.cluster import Cluster, RaySettings
    from orc.node.ray.placer import DRIVER_ID, RayPlacer

    (work / "long3.yaml").write_text(f"""\
name: long3
agents:
  - name: counter
    model: {MODEL}
    system_prompt: You are a storyteller. Write long, detailed stories.
    temperature: 0
    max_tokens: 300
""")
    orc = Orc(ray_cluster.home, cwd=work)
    cluster = Cluster(RaySettings(ray_cluster.address, threads=1))
    cluster.connect()
    try:
        engine = orc.engine(placer=RayPlacer(cluster), node_id=DRIVER_ID)
        bound = engine.preflight(orc.load("long3.yaml"))

        async def close_after_a_token() -> tuple[int, list[int]]:
            events = engine.run(bound, STORY)
            actor = None
            async for event in events:
                if isinstance(event, AgentPlacedOn):
                    actor = cluster.warm(MODEL)[event.node_id]
                if isinstance(event, TokenStreamed) and actor is not None:
                    break
            assert actor is not None
            running_before = (await actor.handle.state.remote()).running
            await events.aclose()  # Ctrl-C, or a caller that stops reading
            seen = []
            for _ in range(30):  # 300 tokens would take far longer than 3 s on one thread
                seen.append((await actor.handle.state.remote()).running)
                if seen[-1] == 0:
                    break
                await asyncio.sleep(0.1)
            return running_before, seen

        before, after = asyncio.run(asyncio.wait_for(close_after_a_token(), 300))
    finally:
        cluster.close()
    assert before == 1 and after[-1] == 0, after


# A vote, two cascades (one accepted at its first level, one that never can be and so asks the
# second) and a run budget, with tiny generations: the engine drives them on Ray as on the mesh.
VOTE = f"""\
name: vote
agents:
  - name: answer
    model: {MODEL}
    system_prompt: Answer with yes or no first, then one short sentence.
    max_tokens: 12
    vote: {{samples: 4, by: majority, extract: '(?i)\\b(yes|no)\\b', temperature: 0.8}}
"""


def cascade_agent(name: str, guard: str) -> str:
    """A cascade smollm2 -> smollm2 whose first level votes twice and is accepted on `guard`."""
    return f"""\
  - name: {name}
    system_prompt: Answer with yes or no first, then one short sentence.
    max_tokens: 8
    cascade:
      - model: {MODEL}
        temperature: 0
        vote: {{samples: 2, extract: '(?i)\\b(yes|no)\\b'}}
        accept_if: '${{agreement}} {guard}'
      - model: {MODEL}
        temperature: 0
"""


BUDGET = f"""\
name: budget
budget: {{max_tokens: 20}}
agents:
  - name: first
    model: {MODEL}
    system_prompt: Answer with yes or no first, then one short sentence.
    max_tokens: 8
  - name: second
    depends_on: [first]
    model: {MODEL}
    max_tokens: 8
"""


def _on_actors(record: dict) -> bool:
    return bool(record["nodes"]) and all(n.startswith(f"orc:{MODEL}:") for n in [record["node_id"], *record["nodes"]])


def test_a_vote_samples_on_the_actors(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "vote.yaml").write_text(VOTE)
    done = orc_cli(ray_cluster, tmp_path, "run", "vote.yaml", "Is the sea salty?", "--on", ray_cluster.address,
                   "--json", "--threads", "1", "--seed", "7")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    answer = result["results"]["answer"]
    assert result["status"] == "completed" and answer["status"] == "completed"
    vote = answer["vote"]
    assert vote["samples"] == 4 and sum(vote["ballots"].values()) + vote["abstained"] == 4
    assert vote["winner"] in vote["ballots"] and vote["winner"] in {"yes", "no"}
    assert _on_actors(answer)  # every sample ran on a Ray actor, none on the driver
    assert answer["usage"]["completion_tokens"] > 12  # the usage adds up the 4 samples, not one
    assert result["usage"]["total_tokens"] >= answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]


def test_a_cascade_stops_at_the_first_level_it_accepts(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "cascades.yaml").write_text("name: cascades\nagents:\n" + cascade_agent("easy", ">= 0")
                                            + cascade_agent("hard", "> 1"))
    done = orc_cli(ray_cluster, tmp_path, "run", "cascades.yaml", "Is the sea salty?", "--on", ray_cluster.address,
                   "--json", "--threads", "1")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    easy, hard = results["easy"], results["hard"]
    assert (easy["cascade"]["level"], easy["cascade"]["tried"]) == (0, 1)  # agreement >= 0 always holds
    assert easy["vote"]["samples"] == 2 and sum(easy["vote"]["ballots"].values()) + easy["vote"]["abstained"] == 2
    assert (hard["cascade"]["level"], hard["cascade"]["tried"]) == (1, 2)  # agreement > 1 never does
    assert [lv["accepted"] for lv in hard["cascade"]["levels"]] == [False, True]
    for record in (easy, hard):
        assert record["status"] == "completed" and record["output"].strip() and _on_actors(record)
    # The hard one paid for both levels: two samples at level 0, one generation at level 1.
    assert hard["usage"]["prompt_tokens"] > easy["usage"]["prompt_tokens"]


def test_a_spent_run_budget_stops_the_run_with_exit_1(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "budget.yaml").write_text(BUDGET)
    done = orc_cli(ray_cluster, tmp_path, "run", "budget.yaml", "Is the sea salty?", "--on", ray_cluster.address,
                   "--json", "--threads", "1")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed_with_errors"
    budget = result["budget"]
    assert budget["max_tokens"] == 20 and budget["used_tokens"] >= 20 and "max_tokens 20" in budget["exhausted"]
    assert budget["used_tokens"] == result["usage"]["total_tokens"]
    # The first agent's prompt alone spends the 20 tokens (its generation ran, on an actor); the
    # second never starts, and fails naming the budget.
    assert result["results"]["first"]["node_id"].startswith(f"orc:{MODEL}:")
    second = result["results"]["second"]
    assert second["status"] == "failed" and "budget" in second["error"] and second["usage"]["completion_tokens"] == 0


def test_samples_side_by_side_on_actors_never_decode_past_the_budget(ray_cluster: LocalCluster,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "vote-budget.yaml").write_text(VOTE.replace("agents:", "budget: {max_tokens: 30}\nagents:"))
    done = orc_cli(ray_cluster, tmp_path, "run", "vote-budget.yaml", "Is the sea salty?", "--on",
                   ray_cluster.address, "--json", "--threads", "1", "--seed", "7")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed_with_errors"
    assert "budget" in result["results"]["answer"]["error"]
    # Each sample started lowered to what the others had not claimed: together, on the actors,
    # they decoded at most the 30 tokens (only their prompts went over).
    assert 0 < result["usage"]["completion_tokens"] <= 30
    assert result["budget"]["used_tokens"] == result["usage"]["total_tokens"] > 30
    assert _on_actors(result["results"]["answer"])
