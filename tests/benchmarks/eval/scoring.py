"""How an item is asked, and how a reply to it is scored.

The ensembles (tests/benchmarks/eval/*.yaml) share one system prompt that asks for the answer
first ("Answer: yes"), so a vote's ballot is at the start of each sample and a few tokens are
enough; the user message (`question`) asks the item in words that depend on its kind. A reply is
scored by the pattern the votes extract their ballots with (`EXTRACT`), so a reply the scorer
cannot read is one a vote cannot count either. The pattern takes a label or a whole number right
after "answer" ("**Answer:** yes"), after "is" ("This review is positive"), after "=" ("4 + 9 =
13"), or as the reply's first word ("No."), and never a number an operator follows (the "4" of
"4 + 9"). The questions avoid those forms themselves ("Answer with yes or no", not "Answer: yes"),
so a model that only repeats its prompt gives no answer rather than a lucky one.
Wrong, missing, or an answer not allowed for the kind (a sentiment answered "yes"): wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.benchmarks.eval.tasks import Task

# The votes' `extract:` (written out again in each ensemble file; the test checks they agree).
# Group 1 is the ballot; the first match in a reply counts.
EXTRACT = r"(?i)(?:answer\W*|\bis\W*|=\s*|^\W*)(positive|negative|yes|no|\d+)\b(?!\s*[-+*/=])"
_EXTRACT = re.compile(EXTRACT)

SYSTEM_PROMPT = "Start your reply with 'Answer:' followed by the answer, then stop."

_QUESTIONS = {
    "sentiment": 'Review: "{prompt}"\nIs this review positive or negative? Start your reply with "Answer:".',
    "fact": '{prompt}\nAnswer with yes or no. Start your reply with "Answer:".',
    "arithmetic": '{prompt}\nStart your reply with "Answer:" and the number.',
}


def question(task: Task) -> str:
    """The user message that asks `task` (the run's input)."""
    return _QUESTIONS[task.kind].format(prompt=task.prompt)


def ballot(reply: str) -> str | None:
    """The answer a reply gives, normalized as the votes normalize ballots (case folded), or None."""
    match = _EXTRACT.search(reply)
    return match.group(1).casefold() if match else None


@dataclass(frozen=True)
class Score:
    given: str | None  # the answer read from the reply; None: none could be read
    correct: bool


def score(task: Task, reply: object) -> Score:
    """Score a run's deliverable (any value: a failed run's is None) against `task`."""
    given = ballot(reply) if isinstance(reply, str) else None
    if given is not None and task.allowed is None and not given.isdigit():
        given = None  # a label where a number was asked for is no answer to a sum
    if given is not None and task.allowed is not None and given not in task.allowed:
        given = None  # a number, or the other kind's label, is no answer to this question
    return Score(given, given == task.answer)
