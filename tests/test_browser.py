"""06_explore in a real browser: JupyterLab on localhost, the notebook opened in headless
Chromium (the system package, driven by Playwright), every cell run against a small
study this test builds, and two or more controls of each explorer operated, with
assertions on what the page shows. Screenshots go to the test's folder (and to
``$ROBUSTLIB_SCREENSHOTS`` when set, which is how the README's were made).

Run on its own with ``pytest -m browser``; skipped, saying why, where Chromium or
Playwright is missing (``.ci/run`` installs Chromium when it can). With
``ROBUSTLIB_BROWSER_STUDY=STORE:STUDY`` it explores that study instead of building one
(the README's screenshots are of the demo study)."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: An explorer's chart: inline SVG, so its title and axes are text in the page.
CHART = ".rl-chart svg"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (Debian: apt-get install chromium); "
                                                "Playwright's own browser download is not used"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: A small study whose defended model can still be broken (the smoke models cannot:
#: they predict one class whatever the input), so the what-if has curves to fit:
#: zoo-0.3m fine-tuned for real (about 0.85 accuracy), 3 rounds of GCG adversarial
#: training, robustness measured every round. About 50 s on 2 cores.
STUDY = {
    "01_finetune": {"sizes": ["zoo-0.3m"], "n_train": 2000, "epochs": 2.0, "lr": 0.002},
    "02_attack": {"n_examples": 8},
    "03_adversarial_training": {"rounds": 3, "eval_every": 1, "n_attack_examples": 16,
                                "train_examples_per_round": 64, "eval_iterations": 8, "eval_examples": 16,
                                "eval_attack": {"name": "gcg", "n_attack_tokens": 10, "top_k": 64,
                                                "n_candidates": 32}},
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A small study (:data:`STUDY`, named ``smoke``, 06's default, in a store of its
    own) and JupyterLab serving a copy of 06 on a free port: yields (url, folder)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    from robustlib import runner

    base = tmp_path_factory.mktemp("browser")
    given = os.environ.get("ROBUSTLIB_BROWSER_STUDY", "")  # "STORE:STUDY": explore an existing study instead
    store, study = given.rsplit(":", 1) if given else (str(base / "runs"), "smoke")
    env = {**os.environ, "ROBUSTLIB_RUNS": store}
    if not given:
        old = os.environ.get("ROBUSTLIB_RUNS")
        os.environ["ROBUSTLIB_RUNS"] = store
        try:
            for nb, params in STUDY.items():
                runner.run_notebook(nb, params, study=study, progress=False)
        finally:
            if old is None:
                os.environ.pop("ROBUSTLIB_RUNS")
            else:
                os.environ["ROBUSTLIB_RUNS"] = old
    # No "get notified about Jupyter news?" toast over the page (it asks on first start).
    settings = base / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env["JUPYTERLAB_SETTINGS_DIR"] = str(base / "lab-settings")
    served = base / "notebooks"
    served.mkdir()
    source = (ROOT / "notebooks" / "06_explore.ipynb").read_text()
    (served / "06_explore.ipynb").write_text(source.replace('study: str = \\"smoke\\"', f'study: str = \\"{study}\\"'))
    port, token = _free_port(), "robustlib-test"
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={served}", "--ServerApp.open_browser=False",
            "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = open(base / "jupyterlab.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"JupyterLab did not start: {(base / 'jupyterlab.log').read_text()[-2000:]}")
    yield f"{url}/lab/tree/06_explore.ipynb?token={token}", base
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def _shot(page, base: Path, name: str, locator=None) -> None:
    target = locator if locator is not None else page
    target.screenshot(path=str(base / f"{name}.png"))
    extra = os.environ.get("ROBUSTLIB_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(Path(extra) / f"{name}.png"))


def _dropdown(page, scope, label: str):
    """The <select> of the dropdown labelled exactly ``label`` inside ``scope``."""
    named = page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
    return scope.locator(".widget-dropdown").filter(has=named).locator("select")


def _number(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, (pattern, text)
    return float(m.group(1))


def test_the_three_explorers_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, base = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.locator(".jp-Notebook").wait_for(timeout=60_000)
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=60_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            _operate(page, base)
        except Exception:
            _shot(page, base, "failed")
            raise
        finally:
            browser.close()
    assert not errors, errors


def _operate(page, base: Path) -> None:
    """Drive the three explorers; assert on what each shows."""
    from playwright.sync_api import expect

    if True:

        # -- the attack explorer: step twice, then change the attack
        attack = page.locator(".rl-attack-explorer")
        attack.wait_for(timeout=120_000)
        status = attack.locator(".rl-iteration")
        expect(status).to_have_text("iteration 0", timeout=30_000)
        step = attack.locator("button", has_text=re.compile(r"^Step$"))
        step.click()
        expect(status).to_have_text("iteration 1", timeout=60_000)
        step.click()
        expect(status).to_have_text("iteration 2", timeout=60_000)
        assert attack.locator(".rl-attack, .rl-changed").count() >= 2  # the attack tokens, highlighted
        expect(attack.locator(CHART).first).to_be_visible(timeout=30_000)  # the loss chart
        assert "broken at" in attack.inner_text() or "P(target class" in attack.inner_text()
        _shot(page, base, "attack-explorer", attack)
        _dropdown(page, attack, "attack").select_option("random_token")
        expect(status).to_have_text("iteration 0", timeout=30_000)  # a new attack starts afresh
        step.click()
        expect(status).to_have_text("iteration 1", timeout=60_000)

        # -- the results browser: narrow to one attack, then to one table
        results = page.locator(".rl-results-browser").first
        results.scroll_into_view_if_needed()
        caption = results.locator(".rl-caption")
        first = caption.inner_text()
        _dropdown(page, results, "attack").select_option("gcg")
        expect(caption).not_to_have_text(first, timeout=30_000)
        one_attack = caption.inner_text()
        rows = _number(one_attack, r"(\d+) rows match")
        chart = results.locator(CHART).first
        expect(chart).to_be_visible(timeout=30_000)
        expect(chart).to_contain_text("ASR vs iterations")
        drawn = chart.inner_html()
        _dropdown(page, results, "source").select_option("robustness")  # 03's evaluations only
        expect(caption).not_to_have_text(one_attack, timeout=30_000)
        assert _number(caption.inner_text(), r"(\d+) rows match") < rows
        page.wait_for_function(  # the chart redrawn from fewer rows (a new SVG replaces the old one)
            "old => document.querySelector('.rl-results-browser .rl-chart svg').innerHTML !== old", arg=drawn,
            timeout=30_000)
        _shot(page, base, "results-browser", results)

        # -- the what-if: move the target ASR, switch the axis
        what_if = page.locator(".rl-what-if")
        what_if.scroll_into_view_if_needed()
        readout = what_if.locator(".rl-readout")
        expect(readout).to_contain_text("takes", timeout=30_000)
        before = readout.inner_text()
        handle = what_if.locator(".noUi-handle, .slider-container .ui-slider-handle").first
        handle.focus()
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        expect(readout).not_to_have_text(before, timeout=30_000)
        assert "takes" in readout.inner_text()
        moved = readout.inner_text()
        fitted = what_if.locator(CHART).first
        target = _number(moved, r"reaching (\d+)% ASR")
        expect(fitted).to_contain_text(f"to {target:.0f}% ASR", timeout=30_000)  # the chart follows the slider
        what_if.locator("button", has_text="fraction of pretraining").click()
        expect(readout).to_contain_text("x pretraining", timeout=30_000)
        assert readout.inner_text() != moved
        expect(fitted).to_contain_text("fraction of pretraining compute", timeout=30_000)  # redrawn on the new axes
        _shot(page, base, "what-if", what_if)
        _shot(page, base, "page")
