"""The dashboard's view of a Ray cluster (`GET /api/ray`): one listing in flight, reused while
fresh, its rows cut to what the page draws. The real `orc models --on` child runs against a
real cluster in tests/node/ray/test_ray_cluster.py."""

from __future__ import annotations

import asyncio

from orc.node.web.ray_view import FRESH_S, MAX_ROWS, RayUnlisted, RayView

ROW = {"id": "smollm2-135m-instruct", "worker": "ray:127.0.0.1/abcd", "node_id": "abcd1234", "actors": 2, "tags": ["lab"]}


class Lister:
    def __init__(self, rows: list | None = None, error: str | None = None, delay: float = 0.0) -> None:
        self.rows, self.error, self.delay, self.calls = rows if rows is not None else [ROW], error, delay, 0

    async def __call__(self, address: str) -> list:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error:
            raise RayUnlisted(self.error)
        return self.rows


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_a_cluster_in_the_config_nothing_is_asked() -> None:
    lister = Lister()
    assert asyncio.run(RayView(None, lister=lister).snapshot()) == {"address": None, "models": [], "error": None,
                                                                    "age_s": None}
    assert lister.calls == 0


def test_pages_asking_at_once_share_one_listing_and_it_is_reused_while_fresh() -> None:
    lister, clock = Lister(delay=0.05), Clock()
    view = RayView("127.0.0.1:10001", lister=lister, clock=clock)

    async def many() -> list:
        return await asyncio.gather(*(view.snapshot() for _ in range(20)))

    answers = asyncio.run(many())
    assert lister.calls == 1 and all(a["models"] == [ROW] and a["error"] is None for a in answers)
    clock.now += FRESH_S - 1
    assert asyncio.run(view.snapshot())["age_s"] == FRESH_S - 1 and lister.calls == 1
    clock.now += 1
    assert asyncio.run(view.snapshot())["age_s"] == 0 and lister.calls == 2


def test_a_failed_listing_says_why_and_is_not_retried_at_every_request() -> None:
    lister, clock = Lister(error="no Ray cluster answers at ray://127.0.0.1:1 " + "x" * 2000), Clock()
    view = RayView("127.0.0.1:1", lister=lister, clock=clock)
    first = asyncio.run(view.snapshot())
    assert first["models"] == [] and first["error"].startswith("no Ray cluster answers") and len(first["error"]) == 500
    asyncio.run(view.snapshot())
    assert lister.calls == 1


def test_rows_are_cut_to_typed_fields_and_model_ids_orc_could_have_written() -> None:
    hostile = [ROW, {"id": "../../etc/passwd", "actors": 1}, "not a row", {"id": 7},
               {"id": "gemma3-270m", "worker": "w" * 5000, "actors": True, "tags": "lab", "extra": "dropped"}]
    rows = asyncio.run(RayView("h:1", lister=Lister(hostile)).snapshot())["models"]
    assert rows[0] == ROW
    assert rows[1] == {"id": "gemma3-270m", "worker": "w" * 200, "node_id": "", "actors": 0, "tags": []}
    assert len(rows) == 2
    many = asyncio.run(RayView("h:1", lister=Lister([ROW] * (MAX_ROWS + 5))).snapshot())["models"]
    assert len(many) == MAX_ROWS
