"""Property: whatever the file holds, loading gives a spec or EnsembleInvalid, never another exception."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orc.scheduler.errors import EnsembleInvalid
from orc.scheduler.agent_parser import AGENT_KEYS
from orc.scheduler.loader import load_ensemble_text

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["${a.x}", "${b}", "${a.x} == yes", "a", "b", "[", "&x"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
agent = st.dictionaries(st.sampled_from(AGENT_KEYS + ("bogus",)), values, max_size=6)
named_agent = st.builds(lambda name, rest: {"name": name, **rest}, st.sampled_from(["a", "b", "c", 3, None]), agent)
document = st.one_of(
    values,
    st.fixed_dictionaries({"name": values, "agents": st.one_of(values, st.lists(named_agent, max_size=5))}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document)
def test_any_document_loads_or_is_refused_cleanly(doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        spec = load_ensemble_text(text, Path("fuzz.yaml"))
    except EnsembleInvalid as invalid:
        assert invalid.problems and all(str(p) for p in invalid.problems)
    else:
        assert spec.agents


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_load_or_are_refused_cleanly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "bytes.yaml"
    path.write_bytes(data)
    from orc.scheduler.loader import load_ensemble

    try:
        load_ensemble(path)
    except EnsembleInvalid:
        pass
