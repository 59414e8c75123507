"""Peak memory of a training step on CUDA and on CPU, and the memory a trainer keeps resident."""

from __future__ import annotations

import ctypes
import os

import torch

#: steps per trainer whose peak memory counts on CPU (run before the timed ones; median of their peaks)
CPU_MEMORY_STEPS = 3
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


class PeakMemory:
    """Peak memory of a block above what was in use when it started: the CUDA allocator's
    statistics, or on CPU the peak resident set size, reset through ``/proc/self/clear_refs``.
    On CPU glibc serves allocations above 64 KiB by ``mmap`` once ``cpu_exact`` was called, so
    freed tensors leave the resident set at once and the figure does not depend on heap reuse.
    ``peak`` stays None where neither works (not Linux/glibc)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak: int | None = None
        self._start = 0

    @staticmethod
    def cpu_readable() -> bool:
        """Whether this system lets a process reset its peak resident set (Linux)."""
        return os.access("/proc/self/clear_refs", os.W_OK)

    @staticmethod
    def cpu_exact(exact: bool = True) -> bool:
        """With ``exact``, make glibc map every allocation above 64 KiB on its own (slower); without,
        serve allocations up to 32 MiB from the heap and keep up to 64 MiB of freed heap, as glibc's
        automatic thresholds end up doing in a training loop."""
        try:
            libc = ctypes.CDLL(None)
            if exact:
                return bool(libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024))
            return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024**2) and libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024**2))
        except (OSError, AttributeError):
            return False

    @staticmethod
    def _status_bytes(field_name: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{field_name} not in /proc/self/status")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            ctypes.CDLL(None).malloc_trim(0)
            self._start = self._status_bytes("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except (OSError, AttributeError):
            self._start = -1
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start >= 0:
            try:
                self.peak = self._status_bytes("VmHWM") - self._start
            except OSError:
                self.peak = None


def resident_bytes(trainer) -> int:
    """Bytes of the trainer's weights, buffers, frozen networks and optimiser state (not gradients)."""
    modules = [trainer.network, *getattr(trainer, "stage_networks", {}).values()]  # stock trainers have none
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    tensors += [v for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    unique = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(unique.values())
