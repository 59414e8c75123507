"""The process a benchmark runs in: environment variables set for a block, device synchronisation,
and the device and versions its figures depend on."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib.metadata import version

import torch


@contextlib.contextmanager
def temporary_environment(**values: str):
    """Set environment variables for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_environment(device: torch.device) -> dict:
    """Device name and the versions that the figures depend on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                              platform.machine())
    return {"device": device.type, "device_name": name, "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "nnunetv2": version("nnunetv2"),
            "nnunet_dsmm": version("nnunet-dsmm"), "python": platform.python_version()}
