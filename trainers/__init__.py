"""nnU-Net trainers of the three stages (found by name via discovery)."""
