"""nnU-Net planning classes for datasets with missing modalities (found by name via discovery)."""
