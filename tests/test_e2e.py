"""Real-browser checks in headless Chromium (Debian's chromium + chromium-driver).

Skipped, with a message, where Chromium is absent; `make e2e` installs it and runs these.
Screenshots go to $CNNSTUDY_SCREENSHOTS (make e2e: results/screenshots/) or a temp dir.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.e2e

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("CNNSTUDY_E2E_REQUIRED"):
        raise RuntimeError("make e2e needs chromium and chromedriver on PATH")
    pytest.skip(
        "Chromium/chromedriver not installed: `make e2e` installs them and runs these checks",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1500,1000",
)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CNNSTUDY_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager fetch a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_ui(tiny_sweep):
    tmp, _, _ = tiny_sweep
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            f"sqlite:///{tmp}/mlflow.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow ui did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def test_mlflow_ui_lists_the_sweep_and_its_trials(browser, mlflow_ui, tiny_sweep, shots):
    _, runs, _ = tiny_sweep
    mlflow.set_tracking_uri(f"sqlite:///{tiny_sweep[0]}/mlflow.db")
    exp_id = runs.iloc[0]["experiment_id"]
    parent = runs[runs["tags.cnnstudy.kind"] == "sweep"].iloc[0]
    wait = WebDriverWait(browser, 60)
    browser.get(f"{mlflow_ui}/#/experiments/{exp_id}/runs")
    name = parent["tags.mlflow.runName"]
    cell = wait.until(ec.presence_of_element_located((By.XPATH, f"//*[text()='{name}']")))
    # the parent is listed; expanding it lists its trial runs
    row = cell.find_element(By.XPATH, "./ancestor::*[@role='row'][1]")
    row.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
    trial = runs[runs["tags.cnnstudy.stage"] == "replicate"].iloc[0]
    wait.until(
        ec.presence_of_element_located((By.XPATH, f"//*[text()='{trial['tags.mlflow.runName']}']"))
    )
    body = _text(browser)
    n_trials = int((runs["tags.cnnstudy.kind"] == "trial").sum())
    listed = [r for r in runs["tags.mlflow.runName"] if r in body]
    assert len(listed) == n_trials + 1, (len(listed), n_trials)
    browser.save_screenshot(str(shots / "mlflow_ui_runs.png"))

    # a trial run's page shows its variant and its test accuracy
    browser.get(f"{mlflow_ui}/#/experiments/{exp_id}/runs/{trial['run_id']}")
    wait.until(ec.presence_of_element_located((By.XPATH, "//*[text()='test_accuracy']")))
    wait.until(ec.presence_of_element_located((By.XPATH, "//*[text()='variant']")))
    body = _text(browser)
    assert trial["params.variant"] in body
    assert f"{trial['metrics.test_accuracy']:.4g}"[:4] in body
    browser.save_screenshot(str(shots / "mlflow_ui_trial.png"))


# The sweep's design choices against its outcome: what its parallel-coordinates plots show.
DESIGN = ["variant", "padding", "downsample", "learning_rate", "test_accuracy"]
# the compare-runs page's plot (plotly parcoords): its axis titles, left to right
PCP_AXES = (
    "return Array.from(document.querySelectorAll('.pcp-plot .parcoords .axis-title'))"
    ".map(e => e.textContent)"
)
SVG_TEXT = "return Array.from(document.querySelectorAll('svg text')).map(e => e.textContent)"


def _in_order(names: list[str], seen: list[str]) -> bool:
    it = iter(seen)
    return all(name in it for name in names)


def test_compare_runs_link_plots_the_design_choices(browser, mlflow_ui, tiny_sweep, shots):
    """compare_runs_url opens MLflow's compare page on the sweep's finished replicate runs.
    Its parallel-coordinates plot starts on MLflow's defaults (the first three params that
    differ, alphabetically, and one metric); adding the design choices in its own boxes
    plots all five."""
    from cnnstudy.tracking import compare_runs_url, find_sweep

    _, runs, _ = tiny_sweep
    parent = find_sweep("smoke")
    url = compare_runs_url(parent, mlflow_ui)
    assert url.startswith(f"{mlflow_ui}/#/compare-runs?runs=")
    rep = runs[(runs["tags.cnnstudy.stage"] == "replicate") & (runs["status"] == "FINISHED")]
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    wait.until(lambda d: d.execute_script(PCP_AXES))
    assert f"Comparing {len(rep)} Runs from 1 Experiment" in _text(browser)
    default = browser.execute_script(PCP_AXES)
    params = rep[[c for c in rep.columns if c.startswith("params.")]]
    differing = sorted(c[7:] for c in params.columns if params[c].nunique() > 1)
    assert default[:3] == differing[:3] and len(default) == 4, (default, differing)

    boxes = browser.find_elements(By.CSS_SELECTOR, "input[role='combobox']")[:2]
    for box, names in zip(boxes, (DESIGN[:4], DESIGN[4:]), strict=True):
        for name in (n for n in names if n not in default):
            box.click()
            box.send_keys(name)
            option = wait.until(
                ec.element_to_be_clickable(
                    (By.CSS_SELECTOR, f"[class*='select-item-option'][title='{name}']")
                )
            )
            option.click()
        box.send_keys(Keys.ESCAPE)
    wait.until(lambda d: set(DESIGN) <= set(d.execute_script(PCP_AXES)))
    browser.save_screenshot(str(shots / "mlflow_compare_runs.png"))


def test_parallel_coordinates_link_needs_no_clicks(browser, mlflow_ui, tiny_sweep, shots):
    """parallel_coordinates_url opens the runs page's chart view, preset (a shared view):
    the sweep's replicate runs only, one parallel-coordinates chart of the five names."""
    from cnnstudy.tracking import find_sweep, parallel_coordinates_url

    parent = find_sweep("smoke")
    url = parallel_coordinates_url(parent, mlflow_ui)
    assert parallel_coordinates_url(parent, mlflow_ui) == url  # the same view, not a new one
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    wait.until(lambda d: set(DESIGN) <= set(d.execute_script(SVG_TEXT)))
    assert _in_order(DESIGN, browser.execute_script(SVG_TEXT))
    body = _text(browser)
    assert "Parallel Coordinates" in body and "Showing all runs" in body
    assert "shared view" in body and "Group: replicate" in body
    browser.save_screenshot(str(shots / "mlflow_parallel_coordinates.png"))


def test_sweep_run_shows_its_datasets_source_commit_and_note(browser, mlflow_ui, tiny_sweep, shots):
    """The parent run: its splits as datasets (runs table and run page), the study file
    and git commit as its source, its note as the description."""
    _, runs, _ = tiny_sweep
    parent = runs[runs["tags.cnnstudy.kind"] == "sweep"].iloc[0]
    exp_id, run_id = parent["experiment_id"], parent["run_id"]
    now = mlflow.get_run(run_id)  # the note changes when the report runs
    note = now.data.tags["mlflow.note.content"].splitlines()[0]
    commit = now.data.tags["mlflow.source.git.commit"]
    dataset = now.inputs.dataset_inputs[0].dataset.name.rsplit("-", 1)[0]
    wait = WebDriverWait(browser, 60)

    browser.get("about:blank")  # a fresh page: leaving a shared view in place can hang
    browser.get(f"{mlflow_ui}/#/experiments/{exp_id}/runs?compareRunsMode=TABLE")
    wait.until(ec.presence_of_element_located((By.XPATH, "//*[text()='Dataset']")))
    wait.until(lambda d: f"{dataset}-train" in _text(d))  # the Dataset column

    browser.get(f"{mlflow_ui}/#/experiments/{exp_id}/runs/{run_id}")
    wait.until(ec.presence_of_element_located((By.XPATH, "//*[text()='Datasets']")))
    wait.until(lambda d: f"{dataset}-train" in _text(d))
    body = _text(browser)
    assert "+2" in body  # train shown, val and test behind it
    assert "smoke.toml" in body and commit[:7] in body  # Source: study file and commit
    plain = note.translate(str.maketrans("", "", "*`>")).strip()  # rendered Markdown
    assert plain[:40] in body, (plain, body[:2000])
    browser.save_screenshot(str(shots / "mlflow_sweep_run.png"))


def test_report_html_renders_every_figure(browser, tiny_sweep, shots):
    tmp = tiny_sweep[0]
    report = tmp / "results/smoke/report.html"
    if not report.exists():
        from cnnstudy.cli import main

        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            assert main(["report", "experiments/smoke.toml"]) == 0
        finally:
            os.chdir(cwd)
    browser.get(report.as_uri())
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 7
    broken = [
        i.get_attribute("alt")
        for i in images
        if not browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", i
        )
    ]
    assert broken == []
    headline = browser.find_element(By.CSS_SELECTOR, "p.headline").text
    assert headline.startswith("Best variant:")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.t th")]
    assert "verdict" in headers and "p (Holm)" in headers
    browser.set_window_size(1300, 2200)
    browser.save_screenshot(str(shots / "report.png"))
