"""nnunet-dsmm: nnU-Net v2 plugin for dual-stage missing MRI modalities.

Kept import-free on purpose: ``discovery`` is imported at every interpreter start.
"""

__version__ = "0.1.0"
