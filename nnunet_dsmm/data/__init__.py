"""Raw datasets: the raw format, its check, BraTS conversion and the synthetic phantom."""
