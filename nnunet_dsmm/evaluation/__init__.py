"""Evaluation: prediction under every channel combination, metrics, results, reports, post-processing,
sliding window and the recovery of missing modalities."""
