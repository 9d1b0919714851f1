"""The ensemble evaluation's task set, scorer and ensembles, checked without running a model."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.benchmarks.ensemble_eval import STRATEGIES, _select, format_section, totals
from tests.benchmarks.eval import scoring, tasks
from tests.benchmarks.eval.scoring import ballot, question, score
from tests.benchmarks.eval.tasks import KINDS, Task

EVAL = Path(tasks.__file__).parent
TASKS = tasks.load()


def by_kind(kind: str) -> list[Task]:
    return [t for t in TASKS if t.kind == kind]


def test_the_committed_file_is_what_the_script_writes():
    assert tasks.TASKS_FILE.read_text() == tasks.render(tasks.build())


def test_ids_are_unique_and_every_kind_has_a_hundred_items():
    assert len({t.id for t in TASKS}) == len(TASKS) >= 300
    assert Counter(t.kind for t in TASKS) == {kind: 100 for kind in KINDS}
    assert len({(t.kind, t.prompt) for t in TASKS}) == len(TASKS), "an item is asked twice"


@pytest.mark.parametrize("kind, labels", [("sentiment", ("positive", "negative")), ("fact", ("yes", "no"))])
def test_labels_are_balanced_and_alternate(kind, labels):
    answers = [t.answer for t in by_kind(kind)]
    assert Counter(answers) == {labels[0]: 50, labels[1]: 50}
    # Any even prefix (what --limit takes) is balanced too.
    assert answers == [labels[i % 2] for i in range(len(answers))]
    assert all(t.allowed == labels for t in by_kind(kind))


def test_arithmetic_answers_are_right_and_the_operations_balanced():
    operations = Counter()
    for task in by_kind("arithmetic"):
        match = re.fullmatch(r"What is (\d+) ([+-]) (\d+)\?", task.prompt)
        assert match, task.prompt
        a, op, b = int(match[1]), match[2], int(match[3])
        assert 1 <= a <= 99 and 1 <= b <= 99 and (a < 10) == (b < 10)  # both one digit, or both two
        assert task.answer == str(a + b if op == "+" else a - b)
        assert int(task.answer) >= 0 and task.allowed is None
        operations[op, a < 10] += 1
    assert operations == {("+", True): 25, ("-", True): 25, ("+", False): 25, ("-", False): 25}


def test_every_item_is_scoreable_and_no_question_answers_itself():
    for task in TASKS:
        assert score(task, f"Answer: {task.answer}") == scoring.Score(task.answer, True), task.id
        other = {"positive": "negative", "negative": "positive", "yes": "no", "no": "yes"}
        wrong = other[task.answer] if task.allowed is not None else str(int(task.answer) + 1)
        assert score(task, f"Answer: {wrong}").correct is False
        # A model that only repeats its prompt (the base model does) must not score by luck.
        assert ballot(question(task)) is None, question(task)
        assert ballot(scoring.SYSTEM_PROMPT + "\n" + question(task)) is None


SENTIMENT = Task("s", "sentiment", "Great.", "positive", ("positive", "negative"))
FACT = Task("f", "fact", "Is ice cold?", "yes", ("yes", "no"))
SUM = Task("a", "arithmetic", "What is 4 + 9?", "13", None)


@pytest.mark.parametrize("task, reply, given", [
    (SENTIMENT, "Answer: positive", "positive"),
    (SENTIMENT, "**Answer:** Positive.", "positive"),
    (SENTIMENT, "This review is positive, as it praises the food.", "positive"),
    (SENTIMENT, 'The answer is "Negative"', "negative"),
    (SENTIMENT, "Positive", "positive"),
    (SENTIMENT, "The reviewer liked it.", None),
    (SENTIMENT, "Answer: yes", None),  # a label of another kind is no answer
    (SENTIMENT, "Answer: 5", None),
    (FACT, "No, ice is not cold.", "no"),
    (FACT, "The answer to this question is \"yes.\"", "yes"),
    (FACT, "Answer: YES", "yes"),
    (FACT, "nothing to say", None),  # "no" only as a whole word
    (FACT, "Ice is indeed cold.", None),
    (FACT, "Answer with yes or no.", None),  # the question repeated
    (SUM, "Answer: 13", "13"),
    (SUM, "4 + 9 = 13", "13"),
    (SUM, "4 + 9 = 14.", "14"),
    (SUM, "The answer is 13.", "13"),
    (SUM, "What is 4 + 9?", None),
    (SUM, "Answer: thirteen", None),
    (SUM, "Answer: yes", None),
])
def test_the_scorer_reads_handwritten_replies(task, reply, given):
    result = score(task, reply)
    assert result.given == given
    assert result.correct is (given == task.answer)


@pytest.mark.parametrize("reply", [None, 13, {"answer": "13"}, ""])
def test_a_reply_that_is_not_text_is_wrong(reply):
    assert score(SUM, reply) == scoring.Score(None, False)


def _agent(name: str) -> dict:
    document = yaml.safe_load((EVAL / name).read_text())
    (agent,) = document["agents"]
    assert agent["name"] == "answer"  # the harness reads this agent's record
    assert agent["system_prompt"] == scoring.SYSTEM_PROMPT and agent["max_tokens"] == 12
    return agent


def test_the_ensembles_are_the_four_strategies():
    assert [s.ensemble for s in STRATEGIES] == ["one-sample.yaml", "vote-5.yaml", "cascade.yaml", "vote-both.yaml"]
    one = _agent("one-sample.yaml")
    assert (one["model"], one["temperature"], "vote" in one) == ("smollm2-135m-instruct", 0, False)
    vote = _agent("vote-5.yaml")
    assert vote["model"] == "smollm2-135m-instruct"
    assert vote["vote"] == {"samples": 5, "by": "majority", "temperature": 0.8, "extract": scoring.EXTRACT}
    first, last = _agent("cascade.yaml")["cascade"]
    assert first == {"model": "smollm2-135m-instruct", "accept_if": "${agreement} >= 0.67",
                     "vote": {"samples": 3, "by": "majority", "temperature": 0.8, "extract": scoring.EXTRACT}}
    assert last == {"model": "gemma3-270m", "temperature": 0}
    both = _agent("vote-both.yaml")
    assert both["vote"] == {"samples": 6, "by": "majority", "temperature": 0.8, "extract": scoring.EXTRACT,
                            "models": ["smollm2-135m-instruct", "gemma3-270m"]}


def test_limit_takes_the_first_items_of_each_kind_balanced():
    chosen = _select(TASKS, 4)
    assert Counter(t.kind for t in chosen) == {kind: 4 for kind in KINDS}
    assert Counter(t.answer for t in chosen if t.kind != "arithmetic") == {"positive": 2, "negative": 2,
                                                                           "yes": 2, "no": 2}
    assert _select(TASKS, None) == TASKS


def _item(task: Task, correct: bool, **detail) -> dict:
    return {"id": task.id, "kind": task.kind, "status": "completed", "reply": "", "given": task.answer if correct else None,
            "correct": correct, "prompt_tokens": 50, "completion_tokens": 5, "run_s": 1.0, "nodes": ["node-a"],
            "model": "smollm2-135m-instruct", "detail": detail, "error": None}


def test_the_report_adds_up_what_the_items_say():
    s1, s2 = by_kind("sentiment")[:2]
    one = {"sentiment": {"wall_s": 2.0, "items": [_item(s1, True), _item(s2, False)]}}
    cascade = {"sentiment": {"wall_s": 5.0, "items": [
        _item(s1, True, cascade={"level": 0, "tried": 1}, vote={"agreement": 1.0}),
        _item(s2, True, cascade={"level": 1, "tried": 2})]}}
    t = totals(list(cascade.values()))
    without_detail = {**_item(s2, False), "model": "gemma3-270m"}  # a result that carries no detail
    assert totals([{"wall_s": 1.0, "items": [without_detail]}]).escalated == 1
    assert (t.n, t.correct, t.escalated, t.escalated_correct, t.agreements, t.tokens) == (2, 2, 1, 1, (1.0,), 110)
    raw = {"limit": 1, "concurrency": 4, "1": {"nodes": 1, "load_before": [0.5], "load_after": [0.7],
                                               "strategies": {"one": one, "cascade": cascade}}}
    text = format_section(raw)
    assert text.startswith("## Ensemble primitives: vote and cascade, evaluated\n")
    assert "| one sample (SmolLM2, greedy) | sentiment | 50% (1/2) | 1/2 | 50 + 5.0 | 2.0 s (1.00 s/item) |" in text
    assert "Gemma asked for 1 of 2: 1 readable, 1 right" in text
    assert "kept SmolLM2's unanimous answer for 1 of 2 items (1 of them right) and sent 1 (50%) on to Gemma" in text


def test_the_ensembles_load_as_votes_and_a_cascade():
    from orc.scheduler.ensemble import CascadeTask
    from orc.scheduler.loader import load_ensemble_text

    def task(name: str):
        path = EVAL / name
        (agent,) = load_ensemble_text(path.read_text(), path).agents
        return agent.task

    assert task("one-sample.yaml").vote is None
    vote = task("vote-5.yaml").vote
    assert (vote.samples, vote.by, vote.temperature, vote.extract) == (5, "majority", 0.8, scoring.EXTRACT)
    cascade = task("cascade.yaml")
    assert isinstance(cascade, CascadeTask) and len(cascade.levels) == 2
    first, last = cascade.levels
    assert (first.task.model, first.task.vote.samples, first.accept_if.op, first.accept_if.literal) == \
        ("smollm2-135m-instruct", 3, ">=", 0.67)
    assert (last.task.model, last.task.vote, last.accept_if) == ("gemma3-270m", None, None)
    both = task("vote-both.yaml").vote
    assert (both.samples, both.models) == (6, ("smollm2-135m-instruct", "gemma3-270m"))
