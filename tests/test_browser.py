"""A real browser drives JupyterLab: notebooks 01 and 07 are opened in headless Chromium (Debian's
/usr/bin/chromium through Python playwright; never `playwright install`), run with Run > Run All Cells in the
smoke profile, and their widgets must render and respond to input (a slider moved with the keyboard changes
the widget's image and text). Screenshots go to build/screenshots/.

JupyterLab runs from this virtual environment on 127.0.0.1 at a free port with a random token, serving a
temporary copy of the notebooks (so autosave never touches the repository), and is stopped by its PID.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# notebook -> (the slider to move, the image and the text that must change)
CASES = {
    "01_adversarial_examples.ipynb": (".clead-eps-slider", ".clead-explorer-image", ".clead-explorer-text"),
    "07_embedding_separation.ipynb": (".clead-explorer-point", ".clead-explorer-images", ".clead-explorer-caption"),
}
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"   # the notebook on screen
RUN_TIMEOUT_MS = 600_000  # a failure limit, not the expected time: 01 runs in ~30 s, 07 (UMAP) in ~2 min here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, token: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of the notebooks; yields (base url, token, folder); stopped by PID."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: apt-get install chromium chromium-driver"
    work = tmp_path_factory.mktemp("lab")
    folder = work / "notebooks"
    folder.mkdir()
    for name in CASES:
        if (ROOT / "notebooks" / name).exists():
            shutil.copy(ROOT / "notebooks" / name, folder / name)
    settings = work / "settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    # every cell in the DOM (no virtual scrolling), start the notebook's kernel without asking, no news pop-up
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "autoStartDefaultKernel": True}))
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "CLEAD_PROFILE": "smoke", "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "JUPYTER_RUNTIME_DIR": str(work / "runtime")}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as for a student
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}", "--ServerApp.open_browser=False"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}: {(work / 'lab.log').read_text()[-2000:]}")
            try:
                _api(f"{base}/api/status", token)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer in 60 s: {(work / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, token, folder
    finally:
        try:
            for kernel in _api(f"{base}/api/kernels", token) or []:
                _api(f"{base}/api/kernels/{kernel['id']}", token, method="DELETE")
        except OSError:
            pass
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _wait_all_cells_ran(page, timeout_ms: int) -> None:
    """Every code cell shows an execution count ([12]:), none queued ([*]:) or unexecuted ([ ]:)."""
    page.wait_for_function(
        """() => {
            const prompts = Array.from(document.querySelectorAll(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'));
            return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:?$/.test(p.textContent.trim()));
        }""", timeout=timeout_ms)
    page.wait_for_selector(f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_ms)


def _wait_kernel_ready(page) -> None:
    """The notebook is open and its python3 kernel started (answering a 'Select Kernel' dialog if one shows)."""
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    deadline = time.time() + 60
    while time.time() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in dialog.first.inner_text():
            dialog.locator(".jp-mod-accept").first.click()
        if page.locator(f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']").count() and \
                page.locator(".jp-KernelStatus, .jp-StatusBar-TextItem", has_text="Idle").count():
            kernels = page.evaluate("async () => (await (await fetch('/api/kernels')).json()).length")
            if kernels:
                return
        time.sleep(0.5)
    raise AssertionError("the notebook's kernel did not start within 60 s")


def _settle(page, image, text, timeout_s: float = 30.0) -> None:
    """Wait until the widget's image and text stop changing (every queued slider event answered)."""
    deadline, last, same = time.time() + timeout_s, None, 0
    while time.time() < deadline:
        now = (image.get_attribute("src"), text.inner_text(),
               page.get_attribute(f"{PANEL} .jp-Notebook-ExecutionIndicator", "data-status"))
        same = same + 1 if now == last and now[2] == "idle" else 0
        if same >= 4:
            return
        last = now
        time.sleep(0.5)
    raise AssertionError(f"the widget kept changing for {timeout_s} s")


def _errors(page) -> list[str]:
    texts = page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")\
        .all_inner_texts()
    return [t[-800:] for t in texts if "Traceback" in t or re.search(r"^\w+(Error|Exception):", t, re.MULTILINE)]


@pytest.mark.parametrize("name", list(CASES))
def test_notebook_widgets_render_and_respond_in_jupyterlab(name, lab, browser):
    assert (ROOT / "notebooks" / name).exists(), f"notebooks/{name} is missing: the browser test covers it"
    slider_css, image_css, text_css = CASES[name]
    base, token, _ = lab
    stem = name.removesuffix(".ipynb")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1024, "height": 1000})
    try:
        # a fresh workspace per notebook: JupyterLab must not restore the previous test's notebook as well
        page.goto(f"{base}/lab/workspaces/{stem}/tree/{name}?reset&token={token}")
        _wait_kernel_ready(page)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        _wait_all_cells_ran(page, RUN_TIMEOUT_MS)
        assert not _errors(page), f"{name} raised in the browser: {_errors(page)}"

        slider, image, text = (page.locator(f"{PANEL} {css}") for css in (slider_css, image_css, text_css))
        assert slider.count() == 1 and image.count() == 1 and text.count() == 1, "the widget did not render"
        slider.scroll_into_view_if_needed()
        image.wait_for(state="visible", timeout=20_000)
        assert image.evaluate("e => e.tagName") == "IMG" and image.evaluate("e => e.naturalWidth") > 0
        src_before, text_before = image.get_attribute("src"), text.inner_text()
        page.screenshot(path=str(SHOTS / f"{stem}_before.png"))

        handle = slider.locator(".noUi-handle")
        readout = slider.locator(".widget-readout")
        value_before = readout.inner_text()
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        page.wait_for_function("([css, old]) => document.querySelector(css).getAttribute('src') !== old",
                               arg=[f"{PANEL} {image_css}", src_before], timeout=30_000)
        page.wait_for_function("([css, old]) => document.querySelector(css).innerText !== old",
                               arg=[f"{PANEL} {text_css}", text_before], timeout=30_000)
        _settle(page, image, text)
        assert readout.inner_text() != value_before, "the slider's value did not change"
        assert image.evaluate("e => e.naturalWidth") > 0
        slider.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / f"{stem}_after.png"))
        assert not _errors(page), f"{name} raised after the slider moved: {_errors(page)}"
    except Exception:
        page.screenshot(path=str(SHOTS / f"{stem}_failure.png"))
        prompts = page.evaluate(f"() => Array.from(document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputPrompt'))"
                                ".map(p => p.textContent.trim()).join(' ')")
        print(f"{name}: prompts at failure: {prompts}; screenshot {SHOTS / f'{stem}_failure.png'}")
        raise
    finally:
        page.close()
        for kernel in _api(f"{base}/api/kernels", token) or []:  # free the CPU and memory for the next notebook
            _api(f"{base}/api/kernels/{kernel['id']}", token, method="DELETE")
