"""Hardware detection on a machine without a GPU (this one and CI), and the backend rules."""

from __future__ import annotations

import json
import subprocess
import sys

from backends import hardware


def test_detect_without_gpu_picks_torch_cpu():
    info = hardware.detect(probe_frameworks=False)
    assert info["ram_total"] > 0 and info["cpu_cores_logical"] >= 1
    if not info["gpus"] and not info["apple_silicon"]:
        assert (info["backend"], info["device"]) == ("torch", "cpu")
        assert "no NVIDIA GPU" in info["reason"]
        assert hardware.summary_line(info).startswith("CPU only")


def test_rules_for_other_machines():
    gb = 1024**3
    base = {"apple_silicon": False, "ram_total": 16 * gb, "gpus": [], "torch": None, "mlx": None}
    mac = {**base, "apple_silicon": True, "mlx": {"installed": True}}
    assert hardware.choose_backend(mac)[:2] == ("mlx", "gpu")
    mac_no_mlx = {
        **base,
        "apple_silicon": True,
        "mlx": {"installed": False},
        "torch": {"installed": True, "mps": True},
    }
    assert hardware.choose_backend(mac_no_mlx)[:2] == ("torch", "mps")
    cuda = {
        **base,
        "gpus": [
            {"index": 0, "name": "NVIDIA H200", "memory_total": 141 * gb, "memory_free": 0, "driver": "x"}
        ],
    }
    backend, device, reason = hardware.choose_backend(cuda)
    assert (backend, device) == ("torch", "cuda") and "H200" in reason
    cpu_torch_on_gpu_box = {**cuda, "torch": {"installed": True, "cuda": False}}
    assert hardware.choose_backend(cpu_torch_on_gpu_box)[1] == "cpu"


def test_nvml_missing_is_a_note_not_a_crash(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_nvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("no pynvml")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nvml)
    notes: list[str] = []
    assert hardware.nvidia_gpus(notes) == []
    assert notes and "nvidia-ml-py" in notes[0]


def test_cli_hardware_json_says_torch_on_cpu_and_why():
    out = subprocess.run(
        [sys.executable, "-m", "desktop", "hardware", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["torch"]["installed"] is True
    if not info["gpus"] and not info["apple_silicon"]:
        assert info["backend"] == "torch" and info["device"] == "cpu"
        assert info["reason"]
