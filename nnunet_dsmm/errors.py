"""The base of every error that nnunet-dsmm raises on purpose.

Each message starts with ``nnunet-dsmm:`` and says what went wrong and what to do; the command
line prints it and exits with status 2. Library code raises these, it never exits the process.
"""

from __future__ import annotations


class DSMMError(Exception):
    """An error of ours (bad input, a missing earlier stage, a bad option), never nnU-Net's."""
