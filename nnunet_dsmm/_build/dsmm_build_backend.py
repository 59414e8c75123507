"""PEP 517 backend: setuptools, plus the discovery ``.pth`` hook in every wheel.

setuptools has no way to place a ``.pth`` file at the root of site-packages for both
regular and editable (PEP 660) installs, so the built wheel is post-processed: the hook
file is added and the wheel's RECORD updated. Nothing else changes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (re-exported PEP 517 hooks)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

PTH_NAME = "nnunet_dsmm-discovery.pth"
# One line, executed by site.py at interpreter start; it only registers an import hook.
PTH_LINE = "import nnunet_dsmm.nnunet.discovery as _dsmm; _dsmm.install()\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def _add_pth(wheel_path: str) -> None:
    tmp_path = wheel_path + ".tmp"
    data = PTH_LINE.encode()
    with zipfile.ZipFile(wheel_path) as src, zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                content += _record_line(PTH_NAME, data).encode()
            if info.filename != PTH_NAME:
                dst.writestr(info, content)
        dst.writestr(PTH_NAME, data)
    os.replace(tmp_path, wheel_path)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    _add_pth(os.path.join(wheel_directory, name))
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    _add_pth(os.path.join(wheel_directory, name))
    return name
