"""The probe cache: answers kept per model, build, CPU and loop settings; anything odd in the
file is ignored rather than trusted; a second load of a model skips the probes and behaves the
same."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orc.node.models.catalog import ModelEntry
from orc.node.models.runtimes.base import ChatMessage, GenerationParams
from orc.node.models.runtimes.probe_cache import MAX_ENTRIES, MAX_FILE_BYTES, ProbeCache, ProbeResult, probe_key

RESULT = ProbeResult(min_tail=2, exact_rows=4, thread_invariant=True)


def test_an_answer_is_kept_and_found_by_its_key(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path / "state" / "llama-probes.json")
    key = probe_key(model_sha256="ab", slots=4)
    assert cache.get(key, slots=4, chunk=512) is None
    cache.put(key, RESULT)
    assert ProbeCache(cache.path).get(key, slots=4, chunk=512) == RESULT
    assert cache.get(probe_key(model_sha256="ab", slots=8), slots=4, chunk=512) is None
    assert probe_key(a=1, b=2) == probe_key(b=2, a=1) != probe_key(a=1, b=3)
    assert [p.name for p in cache.path.parent.iterdir()] == ["llama-probes.json"]  # no temporary left


@pytest.mark.parametrize("entry", [
    {"min_tail": 2, "exact_rows": 5, "thread_invariant": True},  # more rows than the loop has slots
    {"min_tail": 0, "exact_rows": 4, "thread_invariant": True},
    {"min_tail": 600, "exact_rows": 4, "thread_invariant": True},  # longer than a prompt chunk
    {"min_tail": "2", "exact_rows": 4, "thread_invariant": True},
    {"min_tail": 2, "exact_rows": True, "thread_invariant": True},  # a bool is not a count
    {"min_tail": 2, "exact_rows": 4, "thread_invariant": 1},
    {"min_tail": 2, "exact_rows": 4},
    [2, 4, True],
])
def test_an_entry_that_no_probe_could_have_written_is_ignored(tmp_path: Path, entry: object) -> None:
    path = tmp_path / "llama-probes.json"
    path.write_text(json.dumps({"k": entry}))
    assert ProbeCache(path).get("k", slots=4, chunk=512) is None


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"\xff\xfe", b" " * (MAX_FILE_BYTES + 1)])
def test_a_file_that_is_not_a_json_object_reads_as_empty_and_is_replaced(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "llama-probes.json"
    path.write_bytes(content)
    cache = ProbeCache(path)
    assert cache.get("k", slots=4, chunk=512) is None
    cache.put("k", RESULT)
    assert cache.get("k", slots=4, chunk=512) == RESULT


def test_at_most_max_entries_are_kept_the_oldest_dropped(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path / "llama-probes.json")
    for n in range(MAX_ENTRIES + 3):
        cache.put(f"k{n}", RESULT)
    kept = json.loads(cache.path.read_text())
    assert len(kept) == MAX_ENTRIES and "k0" not in kept and f"k{MAX_ENTRIES + 2}" in kept


def test_a_file_in_place_of_the_folder_costs_nothing_but_the_cache(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file, not a folder")
    cache = ProbeCache(tmp_path / "state" / "llama-probes.json")
    cache.put("k", RESULT)  # no exception
    assert cache.get("k", slots=4, chunk=512) is None


def test_a_second_load_skips_the_probes_and_answers_alike(smollm2: ModelEntry, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from orc.node.models.runtimes.llama_batched import BatchedLlamaRuntime

    path = tmp_path / "llama-probes.json"
    request = ([ChatMessage("user", "Name three colors.")], GenerationParams(temperature=0, max_tokens=16, seed=1))

    async def load_and_generate(extra_buffers: bool) -> tuple[bool, tuple, str]:
        runtime = BatchedLlamaRuntime(n_threads=2, slots=4, extra_buffers=extra_buffers, probe_cache=path)
        await runtime.load(smollm2)
        steps = runtime._models[smollm2.id].steps
        answers = (steps.min_tail, steps.exact_rows, steps.thread_invariant)
        text = ""
        async for event in runtime.generate(smollm2, *request):
            text = getattr(event, "text", text)
        await runtime.unload(smollm2.id)
        return steps.probed, answers, text

    first = asyncio.run(load_and_generate(True))
    second = asyncio.run(load_and_generate(True))
    other = asyncio.run(load_and_generate(False))  # other load settings: another key
    assert first[0] is True and second[0] is False and other[0] is True
    assert second[1] == first[1] and second[2] == first[2] and first[2]
    assert len(json.loads(path.read_text())) == 2
