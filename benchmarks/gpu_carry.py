"""Unpack wheels into one site folder and write their console scripts, for ``gpu_prepare.sh``.

    python benchmarks/gpu_carry.py WHEELS_DIR OUT_DIR   ->  OUT_DIR/site (import path), OUT_DIR/bin (commands)

A wheel's content is its installed form; ``.data/purelib`` and ``.data/platlib`` go to the site
folder. Console scripts start ``python3`` and call the entry point, as pip's would.
"""

from __future__ import annotations

import configparser
import shutil
import sys
import zipfile
from pathlib import Path

SCRIPT = """#!/usr/bin/env python3
import sys
from {module} import {attribute}
if __name__ == "__main__":  # worker processes started by spawn import this file again
    sys.exit({call}())
"""


def unpack(wheels: Path, out: Path) -> list[str]:
    site, bin_dir = out / "site", out / "bin"
    site.mkdir(parents=True)
    bin_dir.mkdir()
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    for data in site.glob("*.data"):
        for scheme in ("purelib", "platlib"):
            if (data / scheme).is_dir():
                shutil.copytree(data / scheme, site, dirs_exist_ok=True)
        shutil.rmtree(data)
    commands = []
    for entry_points in site.glob("*.dist-info/entry_points.txt"):
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str
        parser.read(entry_points)
        if not parser.has_section("console_scripts"):
            continue
        for name, target in parser.items("console_scripts"):
            module, _, attribute = target.strip().partition(":")
            path = bin_dir / name
            path.write_text(SCRIPT.format(module=module, attribute=attribute.split(".")[0], call=attribute))
            path.chmod(0o755)
            commands.append(name)
    return commands


if __name__ == "__main__":
    print(f"{len(unpack(Path(sys.argv[1]), Path(sys.argv[2])))} console scripts")
