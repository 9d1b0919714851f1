"""The documentation's ensemble examples stay valid as the loader changes."""

import re
from pathlib import Path

import pytest

from orc.scheduler.errors import EnsembleInvalid
from orc.scheduler.loader import load_ensemble_text

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = [
    (doc.name, index, block)
    for doc in DOCS
    for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.DOTALL))
    if re.search(r"^agents:", block, re.MULTILINE)
]


def test_there_are_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("doc,index,block", EXAMPLES, ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_documented_ensemble_is_valid_unless_marked_invalid(doc, index, block, tmp_path):
    source = tmp_path / f"{doc}-{index}.yaml"
    if "# invalid" in block:
        with pytest.raises(EnsembleInvalid):
            load_ensemble_text(block, source)
    else:
        assert load_ensemble_text(block, source).agents
