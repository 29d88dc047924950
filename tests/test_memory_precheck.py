"""Before the model loads, a run the memory plan says cannot fit is refused as kind ``oom``
(exit 3, the plan's nearest settings as the hint) instead of being killed by the kernel mid-load;
``training.memory_check: false`` lets it start anyway."""

from __future__ import annotations

import pytest

from backends import plan
from backends.config import config_from_dict
from backends.errors import RunFailed
from backends.jobs import run_training
from backends.torch_backend.engine import TorchEngine
from tests.test_train_loop import make_config


@pytest.fixture
def little_free_memory(monkeypatch):
    """This machine with 40 MB free (the tiny run's plan is ~400 MB) and a record of model loads."""
    monkeypatch.setattr(plan, "available_memory", lambda target: 40 * 2**20)
    loads: list[str] = []
    real_setup = TorchEngine.setup

    def setup(self, config, model_dir):
        loads.append(str(model_dir))
        return real_setup(self, config, model_dir)

    monkeypatch.setattr(TorchEngine, "setup", setup)
    return loads


def test_a_run_that_cannot_fit_stops_before_the_model_loads(tmp_path, tiny_model_dir, little_free_memory):
    config = config_from_dict(make_config(tiny_model_dir, tmp_path / "runs", "too-big", max_steps=2))
    with pytest.raises(RunFailed) as failed:
        run_training(config, console=False)
    assert failed.value.kind == "oom"
    assert "not started" in failed.value.message and "GB is free" in failed.value.message
    assert "memory_check: false" in failed.value.hint
    assert little_free_memory == []  # the model was never loaded


def test_memory_check_false_starts_anyway(tmp_path, tiny_model_dir, little_free_memory):
    raw = make_config(tiny_model_dir, tmp_path / "runs", "try-anyway", max_steps=1, memory_check=False)
    run = run_training(config_from_dict(raw), console=False)
    assert little_free_memory == [str(tiny_model_dir)]
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
