"""Headless Chromium on a node's dashboard, run inside that node's namespace by
test_dashboard_netns.py (the page is served on the namespace's own loopback).

    python dashboard_driver.py PHASE URL KEY SHOTS CHROMIUM CHROMEDRIVER [ARG]

prints one JSON object: what the browser saw. Phases:

    run ENSEMBLE   log in, read the mesh, start ENSEMBLE from the page, wait for the run to end,
                   read its DAG, timeline and deliverable; screenshots mesh, run, ensembles, phone
    dead NAME      log in afresh, wait until node NAME shows dead (or is gone); screenshot dead
    nokey          never log in: what the page shows and what /api/mesh and /api/events answer

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
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

DESKTOP = (1280, 900)
PHONE = (375, 740)
SHORT = 30  # seconds: the page reacting to a click or to the event stream
RUN_LIMIT = 420  # seconds: three small agents on two single-thread nodes sharing two cores
DEAD_LIMIT = 90  # seconds: a peer is dead after 3 missed 1 s beats; the page learns it within a second
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
                             ignored_exceptions=(StaleElementReferenceException,)).until(check)
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
    driver.find_element(By.CSS_SELECTOR, f'nav a[data-view="{view}"]').click()
    wait(driver, f"#view-{view} to be shown", lambda d: shown(d, f"#view-{view}"))


def mesh_nodes(driver: WebDriver) -> list[dict]:
    nodes = []
    for element in driver.find_elements(By.CSS_SELECTOR, "#mesh .node"):
        names = element.find_elements(By.CSS_SELECTOR, ".node-name")
        nodes.append({"node_id": element.get_attribute("data-node-id"), "state": element.get_attribute("data-state"),
                      "name": names[0].text.strip() if names else None})
    return nodes


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


def run_phase(driver: WebDriver, url: str, key: str, shots: Path, ensemble: str, seen: dict) -> None:
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
    seen["ensembles"] = [{"name": e.get_attribute("data-name"), "valid": e.get_attribute("data-valid")}
                         for e in driver.find_elements(By.CSS_SELECTOR, "#ensembles .ensemble")]
    shoot(driver, shots, "ensembles", seen["screenshots"])

    seen["start_form_view"] = start_form_view(driver)
    if seen["start_form_view"] is None:
        raise PhaseTimeout("form#start-run is not shown in any view")
    form = driver.find_element(By.CSS_SELECTOR, "form#start-run")
    choose = Select(form.find_element(By.CSS_SELECTOR, "select[name=ensemble]"))
    wait(driver, f"{ensemble} among the start form's choices",
         lambda d: any(o.get_attribute("value") == ensemble for o in choose.options))
    choose.select_by_value(ensemble)
    text = form.find_element(By.CSS_SELECTOR, "textarea[name=input]")
    text.clear()
    text.send_keys("Tea or coffee?")
    form.find_element(By.CSS_SELECTOR, "button#start-run-submit").click()
    wait(driver, "#view-run after starting a run", lambda d: shown(d, "#view-run"))
    seen["run_id"] = wait(driver, "#run to carry a run id",
                          lambda d: d.find_element(By.CSS_SELECTOR, "#run").get_attribute("data-run-id"))
    seen["status"] = wait(driver, "the run to end", lambda d: (
        d.find_element(By.CSS_SELECTOR, "#run").get_attribute("data-status") in ENDED
        and d.find_element(By.CSS_SELECTOR, "#run").get_attribute("data-status")), timeout=RUN_LIMIT)
    # The deliverable arrives with run_finished; the last bars with agent_ended just before.
    wait(driver, "#deliverable to have text", lambda d: d.find_element(By.CSS_SELECTOR, "#deliverable").text.strip())
    seen["agents"] = [{"agent": a.get_attribute("data-agent"), "status": a.get_attribute("data-status"),
                       "node_name": a.get_attribute("data-node-name")}
                      for a in driver.find_elements(By.CSS_SELECTOR, "#dag .dag-agent")]
    seen["bars"] = [{"agent": b.get_attribute("data-agent"), "node_name": b.get_attribute("data-node-name"),
                     "kind": b.get_attribute("data-kind")}
                    for b in driver.find_elements(By.CSS_SELECTOR, "#timeline .bar")]
    seen["deliverable"] = driver.find_element(By.CSS_SELECTOR, "#deliverable").text
    seen["desktop_overflow"] = overflow(driver)
    shoot(driver, shots, "run", seen["screenshots"])

    driver.set_window_size(*PHONE)
    open_view(driver, "mesh")
    seen["phone_overflow"] = overflow(driver)
    shoot(driver, shots, "phone", seen["screenshots"])


def dead_phase(driver: WebDriver, url: str, key: str, shots: Path, name: str, seen: dict) -> None:
    log_in(driver, url, key, seen)
    open_view(driver, "mesh")
    wait(driver, "this node in #mesh", lambda d: len(mesh_nodes(d)) >= 1)

    def dead_or_gone(d: WebDriver) -> bool:
        mine = [n for n in mesh_nodes(d) if n["name"] == name]
        return not mine or mine[0]["state"] in ("dead", "gone")

    wait(driver, f"{name} to show dead or gone", dead_or_gone, timeout=DEAD_LIMIT)
    seen["nodes"] = mesh_nodes(driver)
    shoot(driver, shots, "dead", seen["screenshots"])


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
