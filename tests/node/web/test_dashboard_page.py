"""The dashboard page in a real headless Chromium, against a fake node (dashboard_fake.py): it signs
in, renders every hook of the contract from the node's JSON, follows the event stream live (tokens,
placements, a failover, a node dying), sends its actions with the anti-forgery header, fits a phone,
goes back to its login form when the session lapses, and logs no console error on the way."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser import require_chromium
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from tests.node.web.dashboard_fake import KEY, FakeNode, Served


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, chromedriver = require_chromium()  # installs Debian's chromium as root; skips loudly or fails
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    yield driver
    driver.quit()


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, str]]:
    fake = FakeNode(time.time())
    served = Served(fake)
    yield fake, served.url
    served.stop()


@pytest.fixture
def page(browser: WebDriver, node: tuple[FakeNode, str]) -> Iterator[WebDriver]:
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    yield browser
    browser.get("about:blank")  # closes the event stream before the fake stops
    browser.get_log("browser")  # what this test left is not the next one's


def wait_equal(read: Callable[[], Any], expected: Any, what: str, timeout: float = 30) -> None:
    """Wait until `read()` gives `expected` (a redraw may show a list half built); assert it did."""
    try:
        wait_for(lambda: read() == expected, what, timeout)
    except AssertionError:
        assert wait_for(lambda: [read()], what)[0] == expected, what  # the last reading, shown


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except StaleElementReferenceException:  # the page redrew it meanwhile: look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def severe(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def one(driver: WebDriver, selector: str):
    return driver.find_element(By.CSS_SELECTOR, selector)


def every(driver: WebDriver, selector: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def read_all(driver: WebDriver, selector: str, read: Callable[[Any], Any], what: str) -> list:
    """What `read` gives of every element `selector` finds, once there is one, all read in one pass:
    the page redraws a list when the stream says so, so elements found earlier may be gone."""
    return wait_for(lambda: [read(element) for element in every(driver, selector)], what)


def sign_in(driver: WebDriver, url: str) -> None:
    """Opens the page, signs in with the fake's key, and waits for the live stream; the refused
    first look at /api/mesh is the only console error, and it is the browser's network log line."""
    driver.get(url + "/")
    wait_for(lambda: one(driver, "#login").is_displayed(), "the login form")
    one(driver, "#login input[name=key]").send_keys(KEY)
    one(driver, "button#login-submit").click()
    wait_for(lambda: one(driver, "#connection").get_attribute("data-state") == "live", "the live stream")
    errors = severe(driver)
    assert all(e["source"] == "network" and "/api/mesh" in e["message"] and " 401 " in e["message"]
               for e in errors), errors


def test_sign_in_then_every_view_renders_the_nodes_json(page: WebDriver, node: tuple[FakeNode, str]) -> None:
    fake, url = node
    page.get(url + "/")
    wait_for(lambda: one(page, "#login").is_displayed(), "the login form")
    assert one(page, "#connection").get_attribute("data-state") == "unauthorized"
    assert not one(page, "#view-mesh").is_displayed()

    one(page, "#login input[name=key]").send_keys("orc_wrong")
    one(page, "button#login-submit").click()
    wait_for(lambda: "not accept" in one(page, "#login-error").text, "the refusal")
    assert one(page, "#login").is_displayed()

    one(page, "#login input[name=key]").clear()
    one(page, "#login input[name=key]").send_keys(KEY)
    one(page, "button#login-submit").click()
    wait_for(lambda: one(page, "#connection").get_attribute("data-state") == "live", "the live stream")
    assert not one(page, "#login").is_displayed()
    assert fake.posts[-1].path == "/dashboard/login" and fake.posts[-1].marked
    login_noise = severe(page)
    assert {e["source"] for e in login_noise} == {"network"}, login_noise
    assert all(" 401 " in e["message"] for e in login_noise), login_noise

    nodes = read_all(page, "#mesh .node[data-node-id][data-state]", lambda n: (
        n.get_attribute("data-node-id"), n.get_attribute("data-state"), n.find_element(By.CSS_SELECTOR, ".node-name").text,
        n.text), "the node cards")
    assert [card[:3] for card in nodes] == [("alpha-id", "self", "alpha"), ("beta-id", "verified", "beta")]
    assert "this node" in nodes[0][3] and "812.5 tok/s" in nodes[0][3] and "16 GiB" in nodes[0][3]
    assert "last seen" in nodes[1][3] and "on disk" in nodes[1][3]
    assert not one(page, "#ray").is_displayed()  # no Ray cluster in this node's config

    one(page, 'nav a[data-view="runs"]').click()
    runs = read_all(page, "#runs .run[data-run-id][data-status]",
                    lambda r: (r.get_attribute("data-run-id"), r.get_attribute("data-status")), "the runs")
    assert runs == [("run-old", "interrupted")]
    options = read_all(page, "form#start-run select[name=ensemble] option",
                       lambda o: (o.get_attribute("value"), o.is_enabled()), "the ensembles in the form")
    assert options == [("pair", True), ("broken", False)]

    one(page, 'nav a[data-view="ensembles"]').click()
    ensembles = read_all(page, "#ensembles .ensemble[data-name][data-valid]", lambda e: (
        e.get_attribute("data-name"), e.get_attribute("data-valid"),
        " ".join(p.text for p in e.find_elements(By.CSS_SELECTOR, ".problems")),
        len(e.find_elements(By.CSS_SELECTOR, ".graph-agent"))), "the ensembles")
    assert [e[:2] for e in ensembles] == [("pair", "true"), ("broken", "false")]
    assert "which no agent is called" in ensembles[1][2]
    assert ensembles[0][3] == 3

    assert severe(page) == []


def test_the_ray_cluster_of_the_config_is_listed_under_the_mesh(page: WebDriver, node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.ray = {"address": "10.0.0.5:10001", "error": None, "age_s": 4.2, "models": [
        {"id": "smollm2-135m-instruct", "worker": "ray:10.0.0.6/1a2b3c4d", "node_id": "1a2b3c4d5e", "actors": 2,
         "tags": ["lab"]},
        {"id": "gemma3-270m", "worker": "ray:10.0.0.7/5e6f7a8b", "node_id": "5e6f7a8b9c", "actors": 1, "tags": []}]}
    sign_in(page, url)
    wait_for(lambda: one(page, "#ray").is_displayed(), "the Ray cluster")
    assert one(page, "#ray-address").text == "ray://10.0.0.5:10001"
    assert "2 models on its workers, as of 4 s ago" in one(page, "#ray-status").text
    rows = read_all(page, "#ray-models tbody tr",
                    lambda row: [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td")], "the Ray models")
    assert rows == [["smollm2-135m-instruct", "2", "ray:10.0.0.6/1a2b3c4d", "lab"],
                    ["gemma3-270m", "1", "ray:10.0.0.7/5e6f7a8b", ""]]
    assert severe(page) == []


def test_a_ray_cluster_that_cannot_be_listed_says_why(page: WebDriver, node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.ray = {"address": "10.0.0.5:10001", "models": [], "age_s": 0.0,
                "error": "no Ray cluster answers at ray://10.0.0.5:10001 (Connection refused)"}
    sign_in(page, url)
    wait_for(lambda: one(page, "#ray").is_displayed(), "the Ray cluster")
    status = one(page, "#ray-status")
    assert "Cannot list its models: no Ray cluster answers" in status.text and "error" in status.get_attribute("class")
    assert every(page, "#ray-models tr") == []
    assert severe(page) == []


def test_a_run_started_from_the_page_is_followed_live(page: WebDriver, node: tuple[FakeNode, str]) -> None:
    fake, url = node
    sign_in(page, url)
    one(page, 'nav a[data-view="runs"]').click()
    wait_for(lambda: Select(one(page, "select[name=ensemble]")).options, "the ensembles in the form")
    one(page, "form#start-run textarea[name=input]").send_keys("write a haiku")
    one(page, "button#start-run-submit").click()

    wait_for(lambda: one(page, "#view-run").is_displayed() and one(page, "#run").get_attribute("data-status") == "running",
             "the new run's view")
    run_id = one(page, "#run").get_attribute("data-run-id")
    assert fake.posts[-1].path == "/api/runs" and fake.posts[-1].marked
    assert fake.posts[-1].body == {"ensemble": "pair", "input": "write a haiku"}
    boxes = read_all(page, "#dag .dag-agent[data-agent][data-status][data-node-name]",
                     lambda b: b.get_attribute("data-agent"), "the DAG")
    assert sorted(boxes) == ["count", "draft", "review"]
    assert not one(page, "button#cancel-run").get_attribute("disabled")

    def box(name: str):
        return one(page, f'#dag .dag-agent[data-agent="{name}"]')

    fake.run_event(run_id, {"type": "run_began", "run_id": run_id, "ensemble": "pair",
                            "agents": ["draft", "review", "count"], "resumed": False})
    fake.run_event(run_id, {"type": "agent_began", "agent": "draft", "node_id": "alpha-id", "model": "smollm2", "attempt": 1})
    fake.run_event(run_id, {"type": "agent_placed", "agent": "draft", "node_id": "alpha-id", "node_name": "alpha", "replaces": None})
    time.sleep(0.3)  # it waits for a place
    fake.run_event(run_id, {"type": "agent_working", "agent": "draft", "node_id": "alpha-id", "waited_s": 0.3})
    wait_for(lambda: box("draft").get_attribute("data-status") == "running"
             and box("draft").get_attribute("data-node-name") == "alpha", "draft running on alpha")
    fake.run_event(run_id, {"type": "token", "agent": "draft", "text": "Old pond"})
    # the first agent to stream is followed until the reader picks one
    wait_for(lambda: one(page, "#tokens").text == "Old pond", "the first token")
    fake.run_event(run_id, {"type": "token", "agent": "draft", "text": " - a frog"})
    wait_for(lambda: one(page, "#tokens").text == "Old pond - a frog", "the next token appended")
    def draft_bars() -> list[tuple[str, str, float]]:
        return [(b.get_attribute("data-kind"), b.get_attribute("data-node-name"), float(b.get_attribute("width")))
                for b in every(page, '#timeline .bar[data-agent="draft"]')]

    bars = wait_for(lambda: [b for b in draft_bars() if b[0] == "work"] and draft_bars(), "draft's bars")
    assert [(kind, node) for kind, node, _ in bars] == [("wait", "alpha"), ("work", "alpha")]
    first_width = bars[1][2]
    # a live bar grows with the clock, with no event (waited for: a loaded machine redraws late)
    wait_for(lambda: any(kind == "work" and width > first_width for kind, _, width in draft_bars()),
             "the running bar to grow")

    fake.run_event(run_id, {"type": "agent_ended", "agent": "draft", "status": "completed", "node_id": "alpha-id",
                            "model": "smollm2", "attempts": 1, "started_at": None, "finished_at": None, "error": None,
                            "usage": {"prompt_tokens": 9, "completion_tokens": 4}}, output="Old pond - a frog")
    # review runs on beta, which dies: it moves to alpha
    fake.run_event(run_id, {"type": "agent_began", "agent": "review", "node_id": "beta-id", "model": "smollm2", "attempt": 1})
    fake.run_event(run_id, {"type": "agent_placed", "agent": "review", "node_id": "beta-id", "node_name": "beta", "replaces": None})
    fake.run_event(run_id, {"type": "agent_working", "agent": "review", "node_id": "beta-id", "waited_s": 0})
    box("review").click()
    wait_for(lambda: one(page, "#agent-name").text == "review", "review selected")
    fake.run_event(run_id, {"type": "token", "agent": "draft", "text": " (late)"})  # not the selected agent
    fake.run_event(run_id, {"type": "token", "agent": "review", "text": "Fine"})
    wait_for(lambda: one(page, "#tokens").text == "Fine", "review's tokens only")
    fake.set_state("beta-id", "dead")
    wait_for(lambda: one(page, '#mesh .node[data-node-id="beta-id"]').get_attribute("data-state") == "dead", "beta dead")
    assert "verified → dead" in one(page, "#mesh-changes").get_attribute("textContent")
    fake.run_event(run_id, {"type": "agent_placed", "agent": "review", "node_id": "alpha-id", "node_name": "alpha",
                            "replaces": "beta stopped answering"})
    fake.run_event(run_id, {"type": "agent_working", "agent": "review", "node_id": "alpha-id", "waited_s": 0})
    fake.run_event(run_id, {"type": "agent_ended", "agent": "review", "status": "completed", "node_id": "alpha-id",
                            "model": "smollm2", "attempts": 1, "started_at": None, "finished_at": None, "error": None,
                            "usage": {"prompt_tokens": 5, "completion_tokens": 1}}, output="Fine")
    fake.run_event(run_id, {"type": "agent_began", "agent": "count", "node_id": "alpha-id", "model": None, "attempt": 1})
    fake.run_event(run_id, {"type": "agent_ended", "agent": "count", "status": "completed", "node_id": "alpha-id",
                            "model": None, "attempts": 1, "started_at": None, "finished_at": None, "error": None,
                            "usage": {"prompt_tokens": 0, "completion_tokens": 0}}, output="3 words")
    fake.run_event(run_id, {"type": "run_finished", "status": "completed", "deliverable": "Old pond - a frog\nFine"})

    wait_for(lambda: one(page, "#run").get_attribute("data-status") == "completed", "the run completed")
    wait_for(lambda: one(page, "#deliverable").text == "Old pond - a frog\nFine", "the deliverable")
    assert one(page, "button#cancel-run").get_attribute("disabled") is not None
    wait_equal(lambda: {b.get_attribute("data-agent"): b.get_attribute("data-status") for b in every(page, "#dag .dag-agent")},
               {"draft": "completed", "review": "completed", "count": "completed"}, "every agent completed")
    assert "moved 1×" in box("review").text
    wait_equal(lambda: [(b.get_attribute("data-agent"), b.get_attribute("data-node-name"))
                        for b in every(page, '#timeline .bar[data-kind="work"]')],
               [("draft", "alpha"), ("review", "beta"), ("review", "alpha"), ("count", "alpha")], "the work bars")
    assert len(every(page, '#timeline .bar[data-kind="wait"]')) == 1  # only draft waited
    wait_equal(lambda: [r.get_attribute("data-agent") for r in every(page, "#results .result[data-agent]")],
               ["draft", "review", "count"], "every result")
    results = read_all(page, "#results .result[data-agent]", lambda r: r.get_attribute("textContent"), "the results")
    assert "3 words" in results[2]

    assert severe(page) == []


def test_a_run_known_from_its_journal_and_the_actions(page: WebDriver, node: tuple[FakeNode, str]) -> None:
    fake, url = node
    sign_in(page, url)
    one(page, 'nav a[data-view="runs"]').click()
    wait_for(lambda: every(page, '#runs .run[data-run-id="run-old"]'), "the old run")[0].click()
    wait_for(lambda: one(page, "#run").get_attribute("data-status") == "interrupted", "the old run's view")
    wait_equal(lambda: [(b.get_attribute("data-agent"), b.get_attribute("data-node-name"), b.get_attribute("data-kind"))
                        for b in every(page, "#timeline .bar")],
               [("draft", "alpha", "work"), ("review", "beta", "work")], "its timeline")
    widths = read_all(page, "#timeline .bar", lambda b: float(b.get_attribute("width")), "the bars' widths")
    assert widths[0] == pytest.approx(widths[1], rel=0.01)
    assert one(page, '#dag .dag-agent[data-agent="review"]').get_attribute("data-status") == "failed"
    assert "120 tokens · budget 120/200 tokens, 20.3/60 s" in one(page, "#run-meta").text  # what it spent, of what
    one(page, '#dag .dag-agent[data-agent="draft"]').click()
    wait_for(lambda: one(page, "#tokens").text == "an old draft", "a finished agent's output")
    assert "budget 100/100 tokens (spent)" in one(page, "#agent-meta").text
    assert "beta went away" in one(page, "#results").get_attribute("textContent")

    assert one(page, "button#cancel-run").get_attribute("disabled") is not None
    one(page, "button#resume-run").click()
    wait_for(lambda: one(page, "#run").get_attribute("data-status") == "running", "the run resumed")
    assert fake.posts[-1].path == "/api/runs/run-old/resume" and fake.posts[-1].marked
    one(page, "button#cancel-run").click()
    wait_for(lambda: one(page, "#run").get_attribute("data-status") == "failed", "the run cancelled")
    assert fake.posts[-1].path == "/api/runs/run-old/cancel" and fake.posts[-1].marked
    assert severe(page) == []


def test_on_a_phone_nothing_is_wider_than_the_screen(page: WebDriver, node: tuple[FakeNode, str]) -> None:
    fake, url = node
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                         {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    sign_in(page, url)
    with fake.lock:
        fake.runs["run-old"]["agents"]["a very long agent name that goes on and on[12]/nested-child"] = dict(
            fake.runs["run-old"]["agents"]["draft"])
    for where, ready in [("#/mesh", "#mesh .node"), ("#/runs", "#runs .run"), ("#/ensembles", "#ensembles .ensemble"),
                         ("#/run/run-old", "#timeline .bar")]:
        page.execute_script("location.hash = arguments[0]", where)
        wait_for(lambda: every(page, ready), f"{where} drawn")  # noqa: B023 (called at once)
        assert page.execute_script("return window.innerWidth") == 375
        width = page.execute_script("return document.documentElement.scrollWidth")
        assert width <= 375, f"{where} is {width} px wide on a 375 px screen"
    assert len(every(page, "#dag .dag-agent")) == 4
    assert severe(page) == []


def test_the_stream_comes_back_and_a_lapsed_session_signs_out(page: WebDriver, node: tuple[FakeNode, str]) -> None:
    fake, url = node
    sign_in(page, url)
    fake.drop_streams()
    wait_for(lambda: one(page, "#connection").get_attribute("data-state") == "reconnecting", "reconnecting")
    wait_for(lambda: one(page, "#connection").get_attribute("data-state") == "live", "live again")
    fake.set_state("beta-id", "degraded")  # what comes after the reconnect still arrives
    wait_for(lambda: every(page, '#mesh .node[data-node-id="beta-id"][data-state="degraded"]'), "beta degraded")
    hostile = "<img src=/x onerror=alert(1)>"
    with fake.lock:
        fake.nodes[1]["name"] = hostile
    fake.set_state("beta-id", "verified")
    wait_for(lambda: one(page, '#mesh .node[data-node-id="beta-id"] .node-name').text == hostile, "the name as text")
    assert every(page, "#mesh img") == []
    assert severe(page) == []

    fake.revoke()
    wait_for(lambda: one(page, "#login").is_displayed(), "the login form again")
    assert one(page, "#connection").get_attribute("data-state") == "unauthorized"
    assert not one(page, "#view-mesh").is_displayed()
    assert all(e["source"] == "network" and " 401 " in e["message"] for e in severe(page))
