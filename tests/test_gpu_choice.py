"""The Train page's GPUs row with a faked hardware report: hidden with one GPU, offered with two
(each GPU's memory listed), and Start / Resume launch the worker with ``--nproc`` accordingly."""

from __future__ import annotations

import json

from desktop.gpu_choice import GpuChoice, gpu_lines
from desktop.main_window import MainWindow
from desktop.pages.train_page import TrainPage
from desktop.state import AppState

GB = 10**9  # the app shows decimal GB (backends.hardware.GB)


def gpu(i: int, total: float, free: float) -> dict:
    return {"index": i, "name": "NVIDIA L4", "memory_total": int(total * GB), "memory_free": int(free * GB)}


def test_one_gpu_hides_the_row_two_offer_both_with_their_memory(qtbot):
    choice = GpuChoice()
    qtbot.addWidget(choice)
    with qtbot.waitSignal(choice.offered) as shown:
        choice.set_report({"gpus": [gpu(0, 24, 23)]})
    assert shown.args == [False] and choice.isHidden() and choice.launch_args() == []
    with qtbot.waitSignal(choice.offered) as shown:
        choice.set_report({"gpus": [gpu(0, 24, 23.5), gpu(1, 24, 12.25)]})
    assert shown.args == [True] and not choice.isHidden()
    assert choice.spin.maximum() == 2 and choice.count() == 2
    assert choice.memory.text().splitlines() == [
        "GPU 0: NVIDIA L4 (24.0 GB, 23.5 GB free)",
        "GPU 1: NVIDIA L4 (24.0 GB, 12.2 GB free)",
    ]
    assert choice.launch_args() == ["--nproc", "2"]
    choice.spin.setValue(1)
    assert choice.launch_args() == []
    assert gpu_lines([]) == []


def test_the_window_hands_its_hardware_report_to_the_train_page(qtbot):
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.build_all_pages()
    window.header.ready.emit({"gpus": [gpu(0, 80, 79), gpu(1, 80, 79), gpu(2, 80, 79)]})
    choice = window.train_page.gpu_choice
    assert choice.spin.maximum() == 3 and choice.launch_args() == ["--nproc", "3"]


def test_start_and_resume_pass_the_number_of_gpus(qtbot, tmp_path, monkeypatch):
    page = TrainPage(AppState())
    qtbot.addWidget(page)
    launched: list[list[str]] = []
    monkeypatch.setattr(page, "_launch", launched.append)
    page.gpu_choice.set_report({"gpus": [gpu(0, 24, 23), gpu(1, 24, 23)]})
    assert not page.gpu_choice_label.isHidden()
    assert page.start()
    assert launched[-1][-2:] == ["--nproc", "2"]
    # Resume: as many processes as the checkpoint was written by, whatever the row says.
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "step-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text("4\n")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 4, "world_size": 2}))
    page.gpu_choice.spin.setValue(1)
    monkeypatch.setattr(page.monitor, "load_run", lambda run_dir: None)
    assert page.resume(str(run))
    assert launched[-1] == ["train", "--resume", str(run), "--json", "--nproc", "2"]
