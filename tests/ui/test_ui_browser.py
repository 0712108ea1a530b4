"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium): what a person sees after a failed flow run, during a training run, and when
they click Save checkpoint. Each test saves a screenshot of its page in its temporary folder.

The browser is installed by ``.ci/run``; where it cannot be installed these tests skip, saying
what is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow, CheckpointManager
from checkpoint_flow.ui import Dashboard

pytestmark = pytest.mark.slow

WAIT_S = 60  # generous: the condition, not the time, is what is tested


def _browser_or_skip() -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[test]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)"
        )
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = _browser_or_skip()
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser: Any, condition: Any, what: str) -> Any:
    """Wait until ``condition(browser)`` is truthy; an element the page redrew meanwhile is
    looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, message=what)


def click(browser: Any, selector: str, what: str) -> None:
    """Click the first element ``selector`` finds, once it is there."""

    def clicked(b: Any) -> bool:
        found = css(b, selector)
        if not found or not found[0].is_displayed():
            return False
        found[0].click()
        return True

    wait_for(browser, clicked, what)


def texts(browser: Any, selector: str) -> list[str]:
    return [e.text for e in css(browser, selector)]


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


class Model:
    def __init__(self) -> None:
        self.w = [0.0] * 64

    def state_dict(self) -> dict[str, Any]:
        return {"w": list(self.w)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = list(state["w"])


class Poison:
    """Copies fine, cannot be pickled: the save fails on the writer thread."""

    def __deepcopy__(self, memo: dict) -> Poison:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


class Loop(threading.Thread):
    """A training loop that keeps stepping until stopped, as a real one would."""

    def __init__(self, ckpt: CheckpointManager, epoch: int, **objects: Any) -> None:
        super().__init__(daemon=True)
        self.ckpt, self.epoch, self.objects = ckpt, epoch, objects
        self.step = 0
        self.errors: list[BaseException] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        model = Model()
        while not self.stopped.is_set():
            try:
                self.ckpt.on_step_end(self.step + 1, epoch=self.epoch, model=model,
                                      **self.objects)
            except Exception as exc:  # noqa: BLE001 - a failed save reaches the loop; it ends
                self.errors.append(exc)
                return
            self.step += 1
            time.sleep(0.005)


# ------------------------------------------------------------------ a flow after a failed run

FLOW_SCRIPT = """
import sys
from checkpoint_flow import CheckpointFlow

cp = CheckpointFlow(sys.argv[1])

@cp.add_step(name="download")
def download(state, data):
    state["rows"] = list(range(1000))

@cp.add_step(name="clean")
def clean(state, data):
    state["clean"] = [r for r in state["rows"] if r % 7]

@cp.add_step(name="train")
def train(state, data):
    raise MemoryError("out of memory at batch 17")

@cp.add_step(name="report")
def report(state, data):
    state["report"] = "ok"

cp.run({})
"""


def test_the_flow_page_shows_the_steps_of_a_failed_run_and_where_the_next_run_starts(
    browser, tmp_path
):
    from selenium.webdriver.common.by import By

    location = tmp_path / "flow"
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(FLOW_SCRIPT))
    done = subprocess.run([sys.executable, str(script), str(location)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "out of memory at batch 17" in done.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "checkpoint_flow", "ui", str(location), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = server.stdout.readline().split(" at ", 1)[1].strip()
        browser.get(url)

        def table(b: Any) -> list[list[str]] | None:
            rows = css(b, "#steps-table tbody tr")
            cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
            return cells if len(cells) == 4 else None

        cells = wait_for(browser, table, "the four steps")
        assert [row[1:5] for row in cells] == [
            ["0", "download", "done", "ran"], ["1", "clean", "done", "ran"],
            ["2", "train", "failed", "ran"], ["3", "report", "pending", ""]]
        assert [row[0] for row in cells] == ["", "", "resume \u25b6", ""]
        assert cells[2][8] == "MemoryError: out of memory at batch 17"
        resume_rows = [r.get_attribute("data-step") for r in css(browser, "tr.resume")]
        assert resume_rows == ["train"]
        assert "starts at step train (3/4)" in texts(browser, "#resume-summary")[0]
        assert len(css(browser, "#runs-timeline rect.bar-failed")) == 1
        browser.save_screenshot(str(tmp_path / "flow.png"))

        # The state the failed step received, as a table; values stay unpickled.
        click(browser, "tr[data-step='train'] button.before", "the 'before' button of train")

        def first_row(b: Any) -> list[str] | None:
            rows = css(b, "#state-panel tbody tr")
            return [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")] if rows else None

        first = wait_for(browser, first_row, "the state table")
        assert first[:2] == ["rows", "list"] and first[2].endswith("kB") and first[3] == ""
        assert "--unpickle" in texts(browser, "#state-panel")[0]

        # Rewind through the page: the confirmation, then the marker moves.
        click(browser, "tr[data-step='clean'] button.rewind", "the rewind button of clean")
        click(browser, "#modal-ok", "the confirmation")
        wait_for(browser, lambda b: [r.get_attribute("data-step")
                                     for r in css(b, "#steps-table tr.resume")] == ["clean"],
                 "the resume point moved to clean")
        toast = wait_for(browser, lambda b: texts(b, ".toast.success"), "a success toast")[0]
        assert "starts at step clean" in toast
        browser.save_screenshot(str(tmp_path / "flow-rewound.png"))
    finally:
        server.terminate()
        server.communicate(timeout=60)
    assert CheckpointFlow(location).status().resume_at == "clean"
    assert (tmp_path / "flow.png").stat().st_size > 10_000


# ------------------------------------------------------------------ a training run


def losses(n: int) -> list[float]:
    return [round(1.0 / (epoch + 1) + 0.04 * ((epoch * 7) % 5), 4) for epoch in range(n)]


def test_a_training_run_shows_its_checkpoints_and_the_metric_chart(browser, tmp_path):
    from selenium.webdriver.common.by import By

    ckpt = CheckpointManager(tmp_path / "run", monitor="val_loss", keep_last_n=3)
    model = Model()
    curve = losses(12)
    for epoch, loss in enumerate(curve, 1):
        ckpt.on_epoch_end(epoch, {"val_loss": loss, "acc": 1 - loss}, model=model)
    ckpt.close()
    best_epoch = curve.index(min(curve)) + 1
    kept = [c.file for c in ckpt.checkpoints() if c.role == "rolling"]
    assert len(kept) >= 3 and f"checkpoint_epoch_{best_epoch:04d}.ckpt" in kept
    with Dashboard([str(tmp_path / "run")]) as dashboard:
        browser.get(dashboard.url)

        def page(b: Any) -> dict[str, Any] | None:
            files = [r.get_attribute("data-file") for r in css(b, "table.checkpoints tbody tr")]
            charts = css(b, "svg.metric-chart")
            if not files or not charts:
                return None
            best = charts[0].find_elements(By.CSS_SELECTOR, "polygon.best title")
            return {
                "files": files,
                "points": charts[0].find_element(By.CSS_SELECTOR, "polyline")
                .get_attribute("points").split(),
                "kept": len(charts[0].find_elements(By.CSS_SELECTOR, "circle.kept")),
                "best": [t.get_attribute("textContent") for t in best],
                "legend": texts(b, ".legend")[0],
                "save": len(css(b, ".save-checkpoint")),
            }

        seen = wait_for(browser, page, "the checkpoints and the chart")
        assert f"checkpoint_epoch_{best_epoch:04d}.ckpt" in seen["files"]
        assert "checkpoint_epoch_0012.ckpt" in seen["files"]
        assert "checkpoint_epoch_0001.ckpt" not in seen["files"]
        assert len(seen["points"]) == 12  # every epoch, also those whose checkpoint went
        # Every kept save is marked on the curve; the best one as a diamond.
        assert seen["kept"] == len(kept) - 1
        assert len(seen["best"]) == 1
        assert f"checkpoint_epoch_{best_epoch:04d}.ckpt" in seen["best"][0]
        assert "val_loss" in seen["legend"]
        assert seen["save"] == 0  # the run is over: no save to ask for
        browser.save_screenshot(str(tmp_path / "training.png"))


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[tuple[CheckpointManager, Dashboard]]:
    ckpt = CheckpointManager(tmp_path / "run", monitor="val_loss", keep_last_n=4,
                             metadata={"model": "resnet18", "lr": 0.1})
    model = Model()
    for epoch, loss in enumerate(losses(8), 1):
        ckpt.on_epoch_end(epoch, {"val_loss": loss}, model=model)
    ckpt.wait()
    ckpt.serve()
    dashboard = Dashboard([str(tmp_path / "run")]).start()
    yield ckpt, dashboard
    dashboard.stop()
    ckpt.close(raise_errors=False)


def test_save_checkpoint_from_the_browser_while_the_loop_keeps_stepping(
    browser, tmp_path, live_run
):
    from selenium.webdriver.common.by import By

    ckpt, dashboard = live_run
    loop = Loop(ckpt, epoch=9)
    loop.start()
    try:
        browser.get(dashboard.url)
        wait_for(browser, lambda b: "epoch 9" in "".join(texts(b, ".badge.live")),
                 "the live badge with the loop's epoch")
        click(browser, ".save-checkpoint", "the save button")
        field = wait_for(browser, lambda b: b.find_element(By.ID, "modal-input").is_displayed()
                         and b.find_element(By.ID, "modal-input"), "the name prompt")
        assert field.get_attribute("value") == "checkpoint_epoch_9"
        field.clear()
        field.send_keys("before lr drop")
        step_at_click = loop.step
        browser.find_element(By.ID, "modal-ok").click()
        toast = wait_for(browser, lambda b: [t for t in css(b, ".toast.success")
                                             if "before_lr_drop.ckpt" in t.text],
                         "a success toast naming the file")[0]
        step_after = loop.step
        assert "epoch 9" in toast.text and ckpt.location in toast.text
        assert toast.value_of_css_property("color") == "rgba(255, 255, 255, 1)"
        browser.save_screenshot(str(tmp_path / "saved.png"))
    finally:
        loop.stopped.set()
        loop.join(60)
    assert loop.errors == []
    saved = Path(ckpt.location) / "before_lr_drop.ckpt"
    assert saved.is_file()
    info = ckpt.checkpoint_info("before_lr_drop.ckpt")
    assert info is not None and info.role == "named" and info.epoch == 9
    # The loop was never held: it stepped on while the save was asked for and written.
    assert step_after > step_at_click and info.step >= step_at_click
    rows = wait_for(browser, lambda b: [r for r in css(b, "table.checkpoints tbody tr")
                                        if r.get_attribute("data-file") == saved.name],
                    "the new checkpoint in the table")
    assert "named" in rows[0].text


def test_a_failing_save_shows_an_error_toast(browser, tmp_path):
    from selenium.webdriver.common.by import By

    ckpt = CheckpointManager(tmp_path / "run", every_n_epochs=None)
    ckpt.save(epoch=1, model=Model())
    ckpt.wait()
    ckpt.serve()
    loop = Loop(ckpt, epoch=2, poison=Poison())
    loop.start()
    try:
        with Dashboard([str(tmp_path / "run")]) as dashboard:
            browser.get(dashboard.url)
            click(browser, ".save-checkpoint", "the save button")
            field = wait_for(browser, lambda b: b.find_element(By.ID, "modal-input").is_displayed()
                             and b.find_element(By.ID, "modal-input"), "the name prompt")
            field.clear()
            field.send_keys("doomed")
            browser.find_element(By.ID, "modal-ok").click()
            toast = wait_for(browser, lambda b: css(b, ".toast.error"), "an error toast")[0]
            assert "Save failed" in toast.text and "doomed.ckpt" in toast.text
            assert "refuses to be pickled" in toast.text
            assert toast.value_of_css_property("color") == "rgba(255, 255, 255, 1)"  # readable
            browser.save_screenshot(str(tmp_path / "failed.png"))
            assert not css(browser, ".toast.success")
    finally:
        loop.stopped.set()
        loop.join(60)
        ckpt.close(raise_errors=False)
    assert not (tmp_path / "run" / "doomed.ckpt").exists()
