"""nnU-Net glue: class discovery for the stock commands, the guarded private names, folder locations.

Kept import-free: ``discovery`` is imported at every interpreter start."""
