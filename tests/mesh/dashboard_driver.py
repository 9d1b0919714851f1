"""Headless Chromium on a node's dashboard, run inside that node's namespace by
test_dashboard_netns.py (the page is served on the namespace's own loopback).

    python dashboard_driver.py PHASE URL KEY SHOTS CHROMIUM CHROMEDRIVER [ARG]

prints one JSON object: what the browser saw. Phases:

    run ENSEMBLE:FOLLOW   log in, read the mesh, start ENSEMBLE from the page, select agent FOLLOW
                          in its graph while it waits, wait for the run to end, read the DAG,
                          timeline, tokens and deliverable (and the run's JSON, from the page's
                          own session, to compare); screenshots mesh, run, ensembles, phone
    dead NAME             log in, wait until node NAME shows verified, print {"ready": true}, wait
                          for a line on stdin (the test kills NAME meanwhile), wait until the open
                          page shows NAME dead without a reload; screenshot dead; then forget the
                          session, log in again and read the mesh once more
    nokey                 never log in: what the page shows and what /api/mesh and /api/events answer

Every wait is bounded; a timeout ends the phase with the JSON seen so far and `"timeout"` set, so
the test reports what the page showed rather than a bare selenium traceback. The page is driven
only through the element hooks of the dashboard contract.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from selenium import webdriver
from selenium.common.exceptions import (ElementClickInterceptedException, ElementNotInteractableException,
                                        StaleElementReferenceException, TimeoutException, WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

DESKTOP = (1280, 900)
PHONE = (375, 740)
SHORT = 30  # seconds: the page reacting to a click or to the event stream
RUN_LIMIT = 420  # seconds: three small agents on two single-thread nodes sharing two cores
DEAD_LIMIT = 90  # seconds: a peer is dead after 3 missed 1 s beats; the page learns it within a second
QUESTION = "Should I drink tea or coffee in the morning?"  # the run's input, typed into the start form
ENDED = ("completed", "completed_with_errors", "failed", "interrupted")


class PhaseTimeout(Exception):
    """A bounded wait ran out; the message says for what."""


def browser(chromium: str, chromedriver: str, profile: Path) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox",  # root in a namespace: Chromium's sandbox refuses root
                 "--disable-dev-shm-usage", "--disable-gpu", f"--user-data-dir={profile}",
                 f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_window_size(*DESKTOP)
    driver.set_page_load_timeout(SHORT)
    return driver


def wait(driver: WebDriver, what: str, check: Callable[[WebDriver], Any], timeout: float = SHORT) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException, ElementClickInterceptedException,
                                                 ElementNotInteractableException)).until(check)
    except TimeoutException:
        raise PhaseTimeout(f"{what} (waited {timeout:.0f} s)") from None


def shown(driver: WebDriver, selector: str) -> bool:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return bool(found) and found[0].is_displayed()


def console(driver: WebDriver, seen: list[dict]) -> None:
    """Move the browser's console entries since the last call into `seen`."""
    for entry in driver.get_log("browser"):
        seen.append({"level": entry.get("level"), "message": entry.get("message"), "source": entry.get("source")})


def shoot(driver: WebDriver, shots: Path, name: str, taken: list[str]) -> None:
    time.sleep(0.5)  # let a view that just changed finish painting (CSS transitions, SSE update)
    driver.save_screenshot(str(shots / f"{name}.png"))
    taken.append(name)


def log_in(driver: WebDriver, url: str, key: str, seen: dict) -> None:
    """Open the page and log in through its form. What the console said before the key went in is
    kept apart (`console_before_login`): the page may learn it needs a key from a 401."""
    driver.get(url + "/")
    wait(driver, "#login to be shown", lambda d: shown(d, "#login"))
    time.sleep(1)  # the page's first requests (and their 401s) land before the key goes in
    console(driver, seen["console_before_login"])
    field = driver.find_element(By.CSS_SELECTOR, "#login input[name=key]")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#login button#login-submit").click()
    wait(driver, "#login to go away after logging in", lambda d: not shown(d, "#login"))


def open_view(driver: WebDriver, view: str) -> None:
    click(driver, f'nav a[data-view="{view}"]')
    wait(driver, f"#view-{view} to be shown", lambda d: shown(d, f"#view-{view}"))


def read_all(driver: WebDriver, selector: str, attributes: dict[str, str], name: str | None = None) -> list[dict]:
    """For each element matching `selector`, its `attributes` (key -> attribute name) and, with
    `name`, the text of its first `name` descendant: read in one script, so a page that redraws a
    list every second cannot swap elements between two reads (selenium would call them stale)."""
    return driver.execute_script("""
        const [selector, attributes, name] = arguments;
        return [...document.querySelectorAll(selector)].map(e => {
            const row = {};
            for (const [key, attribute] of Object.entries(attributes)) row[key] = e.getAttribute(attribute);
            if (name) row.name = e.querySelector(name)?.textContent.trim() || null;
            return row;
        });
    """, selector, attributes, name)


def click(driver: WebDriver, selector: str) -> None:
    """Click the element `selector` names, finding it again if a redraw replaced it meanwhile."""
    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    wait(driver, f"{selector} to take a click", clicked)


def mesh_nodes(driver: WebDriver) -> list[dict]:
    return read_all(driver, "#mesh .node", {"node_id": "data-node-id", "state": "data-state"}, ".node-name")


def overflow(driver: WebDriver) -> int:
    """How many CSS pixels the page is wider than the window (0 when nothing scrolls sideways)."""
    return int(driver.execute_script(
        "return Math.max(0, document.documentElement.scrollWidth - window.innerWidth);"))


def start_form_view(driver: WebDriver) -> str | None:
    """The view that shows `form#start-run` (the contract does not say which one holds it)."""
    for view in ("runs", "ensembles", "mesh"):
        open_view(driver, view)
        if shown(driver, "form#start-run"):
            return view
    return None


def fetch_json(driver: WebDriver, path: str) -> Any:
    """GET `path` from the page's origin with its session cookie: what the API told the page."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {credentials: "same-origin"}).then(r => r.json()).then(done, e => done(String(e)));
    """, path)


def run_phase(driver: WebDriver, url: str, key: str, shots: Path, spec: str, seen: dict) -> None:
    ensemble, follow = spec.split(":")
    log_in(driver, url, key, seen)
    open_view(driver, "mesh")
    wait(driver, "two nodes in #mesh", lambda d: len(mesh_nodes(d)) >= 2)
    wait(driver, "every node in #mesh to have a name and a state",
         lambda d: all(n["name"] and n["state"] for n in mesh_nodes(d)))
    seen["nodes"] = mesh_nodes(driver)
    seen["connection"] = driver.find_element(By.CSS_SELECTOR, "#connection").get_attribute("data-state")
    shoot(driver, shots, "mesh", seen["screenshots"])

    open_view(driver, "ensembles")
    wait(driver, f"ensemble {ensemble} listed", lambda d: shown(d, f'#ensembles .ensemble[data-name="{ensemble}"]'))
    seen["ensembles"] = read_all(driver, "#ensembles .ensemble", {"name": "data-name", "valid": "data-valid"})
    shoot(driver, shots, "ensembles", seen["screenshots"])

    seen["start_form_view"] = start_form_view(driver)
    if seen["start_form_view"] is None:
        raise PhaseTimeout("form#start-run is not shown in any view")
    choice = "form#start-run select[name=ensemble]"

    def chosen(d: WebDriver) -> bool:
        Select(d.find_element(By.CSS_SELECTOR, choice)).select_by_value(ensemble)  # NoSuchElement: not yet listed
        return d.execute_script("return document.querySelector(arguments[0]).value;", choice) == ensemble

    wait(driver, f"{ensemble} chosen in the start form", chosen)
    text = driver.find_element(By.CSS_SELECTOR, "form#start-run textarea[name=input]")
    text.clear()
    text.send_keys(QUESTION)
    click(driver, "form#start-run button#start-run-submit")
    wait(driver, "#view-run after starting a run", lambda d: shown(d, "#view-run"))
    seen["run_id"] = wait(driver, "#run to carry a run id",
                          lambda d: d.find_element(By.CSS_SELECTOR, "#run").get_attribute("data-run-id"))
    # Selected before it runs, so its tokens reach #tokens as they stream.
    box = f'#dag .dag-agent[data-agent="{follow}"]'
    wait(driver, f"{follow} in the graph", lambda d: shown(d, box))
    seen["follow_status_when_selected"] = read_all(driver, box, {"status": "data-status"})[0]["status"]
    click(driver, box)
    seen["status"] = wait(driver, "the run to end", lambda d: (
        d.find_element(By.CSS_SELECTOR, "#run").get_attribute("data-status") in ENDED
        and d.find_element(By.CSS_SELECTOR, "#run").get_attribute("data-status")), timeout=RUN_LIMIT)
    # The deliverable arrives with run_finished; the last bars with agent_ended just before.
    wait(driver, "#deliverable to have text", lambda d: d.find_element(By.CSS_SELECTOR, "#deliverable").text.strip())
    seen["agents"] = read_all(driver, "#dag .dag-agent",
                              {"agent": "data-agent", "status": "data-status", "node_name": "data-node-name"})
    seen["bars"] = read_all(driver, "#timeline .bar",
                            {"agent": "data-agent", "node_name": "data-node-name", "kind": "data-kind"})
    seen["deliverable"] = driver.find_element(By.CSS_SELECTOR, "#deliverable").text
    seen["tokens"] = driver.find_element(By.CSS_SELECTOR, "#tokens").text
    seen["desktop_overflow"] = overflow(driver)
    shoot(driver, shots, "run", seen["screenshots"])
    run = fetch_json(driver, f"/api/runs/{seen['run_id']}")
    seen["api_run"] = {"status": run["status"], "deliverable": run["deliverable"],
                       "agents": {name: {"status": a["status"], "node_name": a["node_name"], "output": a["output"]}
                                  for name, a in run["agents"].items()}} if isinstance(run, dict) else run

    open_view(driver, "runs")
    listed = f'#runs .run[data-run-id="{seen["run_id"]}"]'
    wait(driver, "the run in #runs", lambda d: shown(d, listed))
    seen["listed_status"] = read_all(driver, listed, {"status": "data-status"})[0]["status"]

    driver.set_window_size(*PHONE)
    open_view(driver, "mesh")
    seen["phone_overflow"] = overflow(driver)
    shoot(driver, shots, "phone", seen["screenshots"])


def state_of(driver: WebDriver, name: str) -> str:
    """NAME's data-state in #mesh, "gone" when it is not listed."""
    mine = [n["state"] for n in mesh_nodes(driver) if n["name"] == name]
    return mine[0] if mine else "gone"


def dead_phase(driver: WebDriver, url: str, key: str, shots: Path, name: str, seen: dict) -> None:
    log_in(driver, url, key, seen)
    open_view(driver, "mesh")
    wait(driver, f"{name} verified in #mesh", lambda d: state_of(d, name) == "verified")
    seen["before"] = mesh_nodes(driver)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the test killed the node
    killed = time.monotonic()
    wait(driver, f"{name} to show dead or gone on the open page",
         lambda d: state_of(d, name) in ("dead", "gone"), timeout=DEAD_LIMIT)
    seen["seconds_to_dead"] = round(time.monotonic() - killed, 1)
    seen["live"] = mesh_nodes(driver)
    seen["changes"] = driver.execute_script(
        "return [...document.querySelectorAll('#mesh-changes li')].map(li => li.textContent.trim());")
    shoot(driver, shots, "dead", seen["screenshots"])

    driver.delete_all_cookies()
    console(driver, seen["console"])  # what the live page said; the second sign-in starts from 401 again
    log_in(driver, url, key, seen)
    open_view(driver, "mesh")
    wait(driver, "this node in #mesh after signing in again", lambda d: len(mesh_nodes(d)) >= 1)
    seen["nodes"] = mesh_nodes(driver)


def nokey_phase(driver: WebDriver, url: str, shots: Path, seen: dict) -> None:
    with httpx.Client(timeout=SHORT) as http:
        seen["http"] = {path: http.get(url + path).status_code for path in ("/api/mesh", "/api/events", "/api/runs")}
    driver.get(url + "/")
    wait(driver, "#login to be shown", lambda d: shown(d, "#login"))
    # The page may try the stream once before settling on the login form: give it that second.
    time.sleep(2)
    seen["login_shown"] = shown(driver, "#login")
    seen["views_shown"] = [v for v in ("mesh", "runs", "ensembles", "run") if shown(driver, f"#view-{v}")]
    seen["nodes"] = mesh_nodes(driver)
    found = driver.find_elements(By.CSS_SELECTOR, "#connection")
    seen["connection"] = found[0].get_attribute("data-state") if found else None
    console(driver, seen["console_before_login"])  # the page's own requests; the fetches below log 401s too
    # The same requests from the page's own origin, with whatever the browser would send.
    seen["browser"] = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all(["/api/mesh", "/api/events"].map(p =>
            fetch(p, {credentials: "same-origin"}).then(r => [p, r.status]).catch(e => [p, String(e)])))
          .then(pairs => done(Object.fromEntries(pairs)));
    """)


def main(argv: list[str]) -> dict:
    phase, url, key, shots_dir, chromium, chromedriver, *rest = argv
    shots = Path(shots_dir)
    shots.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Any] = {"phase": phase, "screenshots": [], "console_before_login": [], "console": []}
    with tempfile.TemporaryDirectory(prefix="orc-chromium-") as profile:
        driver = browser(chromium, chromedriver, Path(profile))
        try:
            if phase == "run":
                run_phase(driver, url, key, shots, rest[0], seen)
            elif phase == "dead":
                dead_phase(driver, url, key, shots, rest[0], seen)
            elif phase == "nokey":
                nokey_phase(driver, url, shots, seen)
            else:
                raise SystemExit(f"unknown phase {phase}")
        except (PhaseTimeout, WebDriverException) as error:
            seen["timeout"] = str(error).splitlines()[0] if str(error) else type(error).__name__
            try:
                shoot(driver, shots, f"{phase}-failed", seen["screenshots"])
                seen["page_text"] = driver.find_element(By.TAG_NAME, "body").text[-3000:]
            except WebDriverException:
                pass
        finally:
            try:
                console(driver, seen["console"])
            finally:
                driver.quit()
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
