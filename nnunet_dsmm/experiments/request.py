"""What a command asks of the experiments, built once by the command line and passed down unchanged:
where the trainings run (``ExecutorOptions``). Imports nothing else of the package."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutorOptions:
    """Where the trainings of a plan run: ``local`` (``devices``: one CUDA device id per concurrent
    training; else ``jobs`` concurrent trainings on the given device) or ``slurm`` (sbatch options, and a
    ``setup`` shell line run first in every job); step times for the ``--dry-run`` estimate."""

    executor: str = "local"
    devices: tuple[str, ...] = ()
    jobs: int = 1
    partition: str | None = None
    time_limit: str | None = None
    gpus_per_job: int | None = None
    sbatch_options: tuple[str, ...] = ()
    setup: str | None = None
    step_time_ms: float | None = None
    benchmark_json: str | None = None

    def slots(self) -> list[str | None]:
        """One entry per training that may run at once: a CUDA device id, or None (the device as given)."""
        return list(self.devices) if self.devices else [None] * self.jobs

    def device(self, device: str) -> str:
        """The ``-device`` of every training: cuda with ``--devices``, else ``device``."""
        return "cuda" if self.devices else device
