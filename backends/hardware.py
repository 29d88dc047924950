"""Hardware detection: OS, CPU, RAM, Apple silicon / unified memory, NVIDIA GPUs, and the backend
TuneDesk would train with, with the reason in words.

Never raises on a machine without a GPU, without NVML or without torch/MLX: each probe is guarded
and a failed probe is reported as a note. Memory is in bytes.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

# The unit of every memory and disk figure TuneDesk shows: the decimal gigabyte (10^9 bytes), as RAM,
# GPU and disk makers and a non-programmer read "GB" (a GiB, 2^30, would read 7% low). Events and
# JSON keep bytes.
GB = 10**9


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            import subprocess

            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def is_apple_silicon() -> bool:
    """True on macOS with an arm64 processor (M-series)."""
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def nvidia_gpus(notes: list[str] | None = None) -> list[dict[str, Any]]:
    """NVIDIA GPUs from NVML: name, total and free memory (bytes), driver. [] when none or no NVML."""
    try:
        import pynvml
    except ImportError:
        if notes is not None:
            notes.append("nvidia-ml-py is not installed: NVIDIA GPUs not probed through NVML")
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        if notes is not None:
            notes.append(f"NVML unavailable ({type(exc).__name__}): no NVIDIA driver found")
        return []
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_total": int(mem.total),
                    "memory_free": int(mem.free),
                    "driver": driver.decode() if isinstance(driver, bytes) else driver,
                }
            )
    except Exception as exc:
        if notes is not None:
            notes.append(f"NVML query failed: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus


def _torch_probe(notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"installed": False, "cuda": False, "mps": False}
    try:
        import torch
    except Exception as exc:
        notes.append(f"torch not importable: {exc}")
        return out
    out["installed"] = True
    out["version"] = torch.__version__
    try:
        out["cuda"] = bool(torch.cuda.is_available())
        if out["cuda"]:
            out["cuda_devices"] = [
                {
                    "name": torch.cuda.get_device_name(i),
                    "memory_total": torch.cuda.get_device_properties(i).total_memory,
                }
                for i in range(torch.cuda.device_count())
            ]
            out["bf16"] = bool(torch.cuda.is_bf16_supported())
    except Exception as exc:
        notes.append(f"torch.cuda probe failed: {exc}")
    try:
        out["mps"] = bool(torch.backends.mps.is_available())
    except Exception:
        out["mps"] = False
    return out


def _mlx_probe(notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"installed": False}
    try:
        import mlx.core as mx
    except Exception:
        return out
    out["installed"] = True
    try:
        out["default_device"] = str(mx.default_device())
        if mx.metal.is_available():
            info = mx.metal.device_info()
            out["metal"] = True
            out["recommended_working_set"] = int(info.get("max_recommended_working_set_size", 0)) or None
            out["device_name"] = info.get("device_name")
        else:
            out["metal"] = False
    except Exception as exc:
        notes.append(f"MLX probe failed: {exc}")
    return out


def choose_backend(info: dict[str, Any]) -> tuple[str, str, str]:
    """Pick (backend, device, reason) from a ``detect()`` result.

    Rule: MLX on Apple silicon when MLX is installed; PyTorch with CUDA on an NVIDIA GPU; PyTorch
    on MPS on a Mac without MLX; otherwise PyTorch on the CPU.
    """
    torch_info = info.get("torch") or {}
    mlx_info = info.get("mlx") or {}
    gb = GB
    if info.get("apple_silicon"):
        mem = info["ram_total"] / gb
        if mlx_info.get("installed"):
            return (
                "mlx",
                "gpu",
                f"Apple silicon with {mem:.0f} GB unified memory: MLX trains on the GPU through Metal",
            )
        if torch_info.get("mps"):
            return "torch", "mps", "Apple silicon without MLX installed: PyTorch on the GPU through MPS"
    gpus = info.get("gpus") or []
    if gpus or torch_info.get("cuda"):
        if gpus:
            g = gpus[0]
            desc = f"{g['name']}, {g['memory_total'] / gb:.0f} GB"
        else:
            d = torch_info["cuda_devices"][0]
            desc = f"{d['name']}, {d['memory_total'] / gb:.0f} GB"
        if torch_info and torch_info.get("installed") and not torch_info.get("cuda"):
            return (
                "torch",
                "cpu",
                f"NVIDIA GPU found ({desc}) but this torch build has no CUDA: PyTorch on the CPU (slow)",
            )
        return "torch", "cuda", f"NVIDIA GPU found ({desc}): PyTorch with CUDA"
    return "torch", "cpu", "no NVIDIA GPU and not Apple silicon: PyTorch on the CPU (slow: no GPU found)"


def detect(probe_frameworks: bool = True) -> dict[str, Any]:
    """Describe this machine.

    ``probe_frameworks``: also import torch and MLX (if installed) to check CUDA/MPS/Metal; the GUI
    process passes False (it never imports them). Returns a JSON-serialisable dict with ``os``,
    ``cpu``, ``ram_total``, ``ram_available``, ``apple_silicon``, ``unified_memory``, ``gpus``,
    ``torch``, ``mlx``, ``backend``, ``device``, ``reason``, ``notes``.
    """
    notes: list[str] = []
    vm = psutil.virtual_memory()
    info: dict[str, Any] = {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True) or os.cpu_count(),
        "ram_total": int(vm.total),
        "ram_available": int(vm.available),
        "apple_silicon": is_apple_silicon(),
    }
    info["unified_memory"] = int(vm.total) if info["apple_silicon"] else None
    info["gpus"] = nvidia_gpus(notes)
    info["torch"] = _torch_probe(notes) if probe_frameworks else None
    info["mlx"] = _mlx_probe(notes) if probe_frameworks else None
    backend, device, reason = choose_backend(info)
    info.update(backend=backend, device=device, reason=reason, notes=notes)
    return info


def summary_line(info: dict[str, Any]) -> str:
    """One line for the GUI header, e.g. 'CPU only - 24 GB RAM - PyTorch (slow: no GPU found)'."""
    gb = GB
    name = {"torch": "PyTorch", "mlx": "MLX"}[info["backend"]]
    if info["device"] == "cuda" and info["gpus"]:
        g = info["gpus"][0]
        return f"{g['name']} - {g['memory_total'] / gb:.0f} GB VRAM - {name} (CUDA)"
    if info["apple_silicon"]:
        return f"Apple silicon - {info['ram_total'] / gb:.0f} GB unified memory - {name}"
    return f"CPU only - {info['ram_total'] / gb:.0f} GB RAM - {name} (slow: no GPU found)"


def format_report(info: dict[str, Any]) -> str:
    """Human-readable multi-line report for ``tunedesk hardware``."""
    gb = GB
    lines = [
        f"OS:       {info['os']} ({info['machine']}), Python {info['python']}",
        f"CPU:      {info['cpu']} ({info['cpu_cores_physical']} cores, {info['cpu_cores_logical']} threads)",
        f"RAM:      {info['ram_total'] / gb:.1f} GB total, {info['ram_available'] / gb:.1f} GB available",
    ]
    if info["apple_silicon"]:
        lines.append(f"Apple silicon: yes, {info['unified_memory'] / gb:.1f} GB unified memory")
        mlx_info = info.get("mlx") or {}
        if mlx_info.get("recommended_working_set"):
            lines.append(f"MLX recommended working set: {mlx_info['recommended_working_set'] / gb:.1f} GB")
    if info["gpus"]:
        for g in info["gpus"]:
            lines.append(
                f"GPU {g['index']}:    {g['name']}, {g['memory_total'] / gb:.1f} GB VRAM (driver {g['driver']})"
            )
    else:
        lines.append("GPU:      none found")
    lines.append(f"Backend:  {info['backend']} on {info['device']}: {info['reason']}")
    for note in info.get("notes") or []:
        lines.append(f"note:     {note}")
    return "\n".join(lines)
