"""Experiments: schedules, plans of trainings, their executors (local, SLURM), status, the ablation study
and the demo."""
