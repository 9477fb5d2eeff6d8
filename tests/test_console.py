"""The web console in real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium) against a real service fed with findings of every kind (tests/console_feed.py).

Screenshots of each page kind land in test-output/console/ (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlvigil.app.demo.webhook_sink import WebhookSink
from tests import console_feed
from tests.harness import REPO, ServiceHandle

pytestmark = pytest.mark.timeout(240)

TOKEN = "console-test-token"
SHOTS = REPO / "test-output" / "console"
WAIT_S = 15.0


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceHandle, WebhookSink, dict[str, Any]]]:
    sink = WebhookSink().start()
    svc = console_feed.start(tmp_path_factory.mktemp("console"), sink, TOKEN)
    try:
        found = console_feed.feed_all(svc)
        yield svc, sink, found
    finally:
        svc.kill()
        sink.stop()


def _chrome() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium: pip install -e '.[test]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if chromium is None or not Path(driver_bin).exists():
        pytest.fail(
            "chromium and chromedriver are needed: apt-get install chromium chromium-driver (scripts/test.sh does)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browser(stack: tuple[ServiceHandle, WebhookSink, dict[str, Any]]) -> Iterator[Any]:
    """A browser logged in to the console through its login form."""
    from selenium.webdriver.common.by import By

    svc = stack[0]
    driver = _chrome()
    try:
        driver.get(f"{svc.api}/ui/findings")
        _wait(driver, lambda d: "/ui/login" in d.current_url)
        driver.find_element(By.NAME, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        _wait(
            driver,
            lambda d: (
                d.current_url.endswith("/ui/findings") and d.find_elements(By.CSS_SELECTOR, "table.findings")
            ),
        )
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, cond: Any, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def _shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 6000)")
    width = driver.execute_script("return window.innerWidth")
    driver.set_window_size(max(width, 390), height + 120)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _drawn(driver: Any, selector: str) -> int:
    """How many elements match and are drawn with a size (the SVG rendered, not only sent)."""
    return int(
        driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).filter(e => {"
            " const r = e.getBoundingClientRect(); return r.width > 0 || r.height > 0; }).length",
            selector,
        )
    )


def _http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _open_from_list(driver: Any, api: str, kind: str) -> str:
    """Filter the list by kind with its select (the page's script submits it), open the first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(f"{api}/ui/findings")
    Select(driver.find_element(By.NAME, "kind")).select_by_value(kind)
    _wait(driver, lambda d: f"kind={kind}" in d.current_url)
    links = driver.find_elements(By.CSS_SELECTOR, "table.findings a.kind")
    assert links and {a.text for a in links} == {kind}
    links[0].click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".finding-head"))
    head = driver.find_element(By.CSS_SELECTOR, ".finding-head")
    assert head.get_attribute("data-kind") == kind
    return str(driver.current_url)


# -- auth ------------------------------------------------------------------------------------------
def test_pages_need_the_token(stack: tuple[ServiceHandle, WebhookSink, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    svc = stack[0]
    status, headers, _ = _http(f"{svc.api}/ui/findings?kind=straggler")
    assert status == 303 and headers["Location"] == "/ui/login?next=/ui/findings%3Fkind%3Dstraggler"
    status, _, body = _http(f"{svc.api}/ui/findings", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "table" in body
    status, _, _ = _http(f"{svc.api}/ui/findings", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    # The login form itself and its stylesheet are open; nothing else is.
    assert _http(f"{svc.api}/ui/login")[0] == 200 and _http(f"{svc.api}/ui/static/console.css")[0] == 200
    assert _http(f"{svc.api}/api/v1/findings")[0] == 401

    driver = _chrome()
    try:
        driver.get(f"{svc.api}/ui/gpus")
        _wait(driver, lambda d: "/ui/login" in d.current_url)
        _shot(driver, "login")
        driver.find_element(By.NAME, "token").send_keys("not-the-token")
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "p.error"))
        assert "Wrong token" in driver.find_element(By.CSS_SELECTOR, "p.error").text
        assert driver.get_cookies() == []
        driver.find_element(By.NAME, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        _wait(
            driver,
            lambda d: d.current_url.endswith("/ui/gpus") and d.find_elements(By.CSS_SELECTOR, "table.fleet"),
        )
        cookie = driver.get_cookie("mlvigil_console")
        assert (
            cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        )
        # The session reads the API (the console's JSON and raw-records links) but changes nothing there.
        jar = {"Cookie": f"mlvigil_console={cookie['value']}"}
        assert _http(f"{svc.api}/api/v1/findings?limit=1", headers=jar)[0] == 200
        assert _http(f"{svc.api}/api/v1/evaluate", "POST", jar, b"")[0] == 401
        # A console action with the cookie from another site's page is refused.
        other = {**jar, "Origin": "http://evil.example", "X-Mlvigil-Console": "1"}
        assert _http(f"{svc.api}/ui/actions/triggers/x/approve", "POST", other, b"")[0] == 401
        driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
        _wait(driver, lambda d: "/ui/login" in d.current_url)
        driver.get(f"{svc.api}/ui/findings")
        _wait(driver, lambda d: "/ui/login" in d.current_url)
    finally:
        driver.quit()


# -- findings ----------------------------------------------------------------------------------------
def test_the_list_filters_by_kind_severity_state_time_and_labels(stack: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    svc, _, _ = stack
    browser.get(f"{svc.api}/ui/findings")
    kinds = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.findings a.kind")}
    assert set(console_feed.KINDS) <= kinds
    _shot(browser, "findings")

    Select(browser.find_element(By.NAME, "severity")).select_by_value("critical")
    _wait(browser, lambda d: "severity=critical" in d.current_url)
    severities = {
        e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.findings td:first-child .badge")
    }
    assert severities == {"critical"}

    Select(browser.find_element(By.NAME, "since")).select_by_value("1h")
    _wait(browser, lambda d: "since=1h" in d.current_url)
    assert browser.find_elements(By.CSS_SELECTOR, "table.findings tbody tr")

    box = browser.find_element(By.NAME, "label")
    box.clear()
    box.send_keys(f"run_id={console_feed.RUN_ID}")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    _wait(browser, lambda d: "label=run_id" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.findings tbody tr")
    assert rows and all(f"run_id={console_feed.RUN_ID}" in r.text for r in rows)

    browser.get(f"{svc.api}/ui/findings?state=resolved&label=gpu_uuid%3Dnone")
    assert browser.find_elements(By.CSS_SELECTOR, "p.empty")
    browser.get(f"{svc.api}/ui/findings?label=not%20a%20filter")
    assert "name=value" in browser.find_element(By.CSS_SELECTOR, "p.error").text


def test_each_kind_opens_from_the_list_with_its_evidence_drawn(stack: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    svc, _, _ = stack
    # Drift: reference against current per feature, the monitor's statistic over time.
    _open_from_list(browser, svc.api, "data_drift")
    assert _drawn(browser, 'figure.feature[data-feature="f0"] svg rect.box') == 2  # reference, current
    assert _drawn(browser, "svg.plot-line polyline.line") > 0
    assert "credit-estimated" in browser.page_source  # the label-free estimate of the same model
    assert _drawn(browser, "svg.plot-boxes rect.box") >= 2
    _shot(browser, "finding-data-drift")

    _open_from_list(browser, svc.api, "llm_drift")
    assert _drawn(browser, 'figure.feature[data-feature="finish_reason"] svg rect.bar') >= 2
    assert _drawn(browser, 'figure.feature[data-feature="input_tokens"] svg rect.box') == 2
    _shot(browser, "finding-llm-drift")

    _open_from_list(browser, svc.api, "performance_drift")
    assert _drawn(browser, "svg.plot-boxes rect.box") >= 2
    assert "accuracy" in browser.find_element(By.CSS_SELECTOR, "section.evidence").text
    _shot(browser, "finding-estimated-performance")

    # Training: the per-rank heat map (4 ranks x step bins), straggler scores, loss with anomalies.
    _open_from_list(browser, svc.api, "straggler")
    assert _drawn(browser, "svg.plot-heatmap rect.cell") >= 4
    # After step 150 rank 2's row is dark (slow), the others stay pale.
    reds = browser.execute_script(
        "const out = {};"
        " for (const c of document.querySelectorAll('svg.plot-heatmap rect.cell')) {"
        "  const t = c.querySelector('title').textContent;"
        "  const m = t.match(/^rank (\\d+), ([\\d.]+) to ([\\d.]+):/);"
        "  if (m && +m[2] >= 160) { const r = +c.getAttribute('fill').match(/\\d+/)[0];"
        "   out[m[1]] = Math.max(out[m[1]] || 0, 255 - r); } }"
        " return out;"
    )
    assert reds["2"] > 60 and max(reds[r] for r in ("0", "1", "3")) < 30, reds
    assert _drawn(browser, "svg.plot-line polyline.line") >= 5  # 4 ranks' scores + the loss
    scores = browser.find_element(By.CSS_SELECTOR, "section.straggler-scores svg.plot-line")
    assert "rank 2" in scores.get_attribute("innerHTML")
    _shot(browser, "finding-straggler")

    _open_from_list(browser, svc.api, "loss_anomaly")
    assert _drawn(browser, "section.loss svg circle.marker") >= 1
    _shot(browser, "finding-loss-anomaly")

    # GPU: its signals over time and the XID it logged.
    _open_from_list(browser, svc.api, "gpu_fault")
    assert _drawn(browser, "figure.signal svg polyline.line") >= 1
    counters = browser.find_element(By.CSS_SELECTOR, "table.counters").text
    assert "xid=79" in counters
    _shot(browser, "finding-gpu-fault")

    _open_from_list(browser, svc.api, "gpu_degraded")
    assert _drawn(browser, 'figure.signal[data-signal="throttle"] svg polyline.line') >= 1
    _shot(browser, "finding-gpu-degraded")

    # Carbon: emissions against the budget.
    _open_from_list(browser, svc.api, "carbon_overrun")
    assert (
        _drawn(browser, "svg.plot-line polyline.line") >= 1
        and _drawn(browser, "svg.plot-line line.rule") >= 1
    )
    # The measured cumulative curve, not a straight line from zero to the total.
    used = browser.find_element(By.CSS_SELECTOR, "svg.plot-line polyline.line").get_attribute("points")
    assert len(used.split()) > 2
    _shot(browser, "finding-carbon")

    # Every finding page links its raw records, and they answer with the session.
    href = browser.find_element(By.CSS_SELECTOR, "a.records").get_attribute("href")
    browser.get(href)
    assert '"table"' in browser.page_source


def test_an_approval_click_starts_the_retrain(stack: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    svc, sink, _ = stack
    pending = svc.wait_for(lambda: svc.get("/api/v1/retrain/triggers", status="pending_approval")["triggers"])
    finding_id = pending[0]["finding"]["id"]
    browser.get(f"{svc.api}/ui/findings/{finding_id}")
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="dry-run"]').click()
    preview = _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "pre.dry-run") if e.text])
    assert json.loads(preview[0].text)["url"].endswith("/retrain")
    assert not [d for d in sink.deliveries if d.path == "/retrain"]  # a dry run sends nothing
    _shot(browser, "finding-retrain-pending")

    browser.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "pre.done"))
    status = browser.find_element(By.CSS_SELECTOR, ".trigger-status .badge").text
    assert status == "queued"
    sent = svc.wait_for(lambda: [d for d in sink.deliveries if d.path == "/retrain"], timeout=WAIT_S)
    assert sent[0].body["trigger_id"] == pending[0]["id"]
    trigger = svc.get("/api/v1/retrain/triggers")["triggers"][0]
    assert any(h["status"] == "approved" and "console" in h["reason"] for h in trigger["history"])


def test_monitors_runs_and_gpus_pages(stack: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    svc, _, _ = stack
    browser.get(f"{svc.api}/ui/monitors")
    monitor = browser.find_element(By.CSS_SELECTOR, 'section.monitor[data-monitor="credit-features"]')
    assert "drift" in monitor.text and monitor.find_elements(By.CSS_SELECTOR, "svg.plot-line polyline.line")
    _shot(browser, "monitors")

    browser.get(f"{svc.api}/ui/runs")
    row = browser.find_element(By.CSS_SELECTOR, "table.runs tbody tr")
    assert console_feed.RUN_ID in row.text and ("warning" in row.text or "critical" in row.text)
    row.find_element(By.TAG_NAME, "a").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.plot-heatmap"))
    assert _drawn(browser, "svg.plot-heatmap rect.cell") >= 4
    _shot(browser, "run")

    browser.get(f"{svc.api}/ui/gpus")
    verdicts = {
        r.find_element(By.CSS_SELECTOR, "td:nth-child(3)").text: r.find_element(
            By.CSS_SELECTOR, ".verdict"
        ).get_attribute("data-verdict")
        for r in browser.find_elements(By.CSS_SELECTOR, "table.fleet tbody tr")
    }
    assert verdicts[console_feed.gpu_uuid(3)] == "fault"
    assert verdicts[console_feed.gpu_uuid(2)] == "degraded"
    assert verdicts[console_feed.gpu_uuid(0)] == "healthy"
    _shot(browser, "gpus")
    browser.get(f"{svc.api}/ui/gpus/{console_feed.gpu_uuid(2)}")
    assert _drawn(browser, 'figure.signal[data-signal="mlvigil.gpu.clock.sm"] polyline.line') == 1
    _shot(browser, "gpu")


def test_a_phone_sized_window_reads_without_sideways_scrolling(stack: Any, browser: Any) -> None:
    svc, _, found = stack
    try:
        for path in (
            "/ui/findings",
            f"/ui/findings/{found['straggler']['id']}",
            f"/ui/findings/{found['data_drift']['id']}",
        ):
            browser.set_window_size(390, 844)
            browser.get(svc.api + path)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, (path, overflow)
        _shot(browser, "phone-finding-data-drift")
    finally:
        browser.set_window_size(1280, 1000)


def test_alerts_link_to_the_finding_page(stack: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    svc, sink, _ = stack
    deliveries = svc.wait_for(lambda: [d for d in sink.deliveries if d.path == "/alerts"], timeout=WAIT_S)
    alert = deliveries[0].body["alerts"][0]
    path = "/ui/findings/" + alert["labels"]["finding_id"]
    assert (
        alert["generatorURL"].endswith(path) and alert["annotations"]["console_url"] == alert["generatorURL"]
    )
    browser.get(svc.api + path)
    assert (
        browser.find_element(By.CSS_SELECTOR, ".finding-head").get_attribute("data-kind")
        == alert["labels"]["alertname"]
    )
    deliveries_table = browser.find_element(By.CSS_SELECTOR, "table.deliveries").text
    assert "sink" in deliveries_table
