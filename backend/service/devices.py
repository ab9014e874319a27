"""What compute this machine offers the service: the GPU name and count, cheaply."""

from __future__ import annotations

import glob


def detect_device() -> str:
    """The CUDA GPU name, or "cpu". Torch is imported only when an NVIDIA device node exists, because
    importing it costs seconds and most servers without one answer "cpu" anyway."""
    if not gpu_count():
        return "cpu"
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # a broken CUDA install must not stop the server
        return "cpu"


def gpu_count() -> int:
    """Number of NVIDIA GPUs from their device nodes (no torch import: that costs seconds)."""
    return len(glob.glob("/dev/nvidia[0-9]*"))
