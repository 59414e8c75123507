"""The stock nnU-Net class lookup finds our classes in a fresh interpreter with no extra setup.

If nnU-Net changes how it looks classes up, these tests fail loudly: discovery depends on
``nnunetv2.utilities.find_class_by_name.recursive_find_python_class``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from importlib.metadata import distributions

from nnunet_dsmm.discovery import ENTRY_POINT_GROUP

OUR_CLASSES = {
    "DSMMFingerprintExtractor": ("experiment_planning", "nnunet_dsmm.planners.fingerprint"),
    "DSMMPlanner": ("experiment_planning", "nnunet_dsmm.planners.planner"),
    "DSMMPlannerResEncM": ("experiment_planning", "nnunet_dsmm.planners.planner"),
    "DSMMPlannerResEncL": ("experiment_planning", "nnunet_dsmm.planners.planner"),
    "DSMMPlannerResEncXL": ("experiment_planning", "nnunet_dsmm.planners.planner"),
    "DSMMPreprocessor": ("preprocessing", "nnunet_dsmm.planners.preprocessor"),
    "DSMMTeacherTrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.teacher"),
    "DSMMBaselineTrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.teacher"),
    "DSMMPretrainTrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.pretrain"),
    "DSMMPretrainNoDATrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.pretrain"),
    "DSMMTrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerNoCTD": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMFinetuneDATrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMFinetuneMaskRecTrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerNoPGMA": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerFrozenRecovery": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerAvailableKD": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerBinaryCode": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerUnconditionedHeads": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerDetachedKD": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMTrainerDiceOnly": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
    "DSMMBaselineComputeMatchedTrainer": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.teacher"),
    "DSMMTrainerLowMemory": ("training/nnUNetTrainer", "nnunet_dsmm.trainers.dsmm"),
}


def fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tempfile.gettempdir())


def installed_distribution():
    """The installed dist-info (not a build's egg-info that may sit in the working directory)."""
    purelib = sysconfig.get_paths()["purelib"]
    return next(d for d in distributions(path=[purelib]) if d.metadata["Name"] == "nnunet-dsmm")


def test_discovery_hook_is_installed_in_site_packages():
    files = [str(f) for f in installed_distribution().files]
    assert "nnunet_dsmm-discovery.pth" in files
    assert os.path.isfile(os.path.join(sysconfig.get_paths()["purelib"], "nnunet_dsmm-discovery.pth"))


def test_every_registered_class_is_an_entry_point():
    names = {ep.name for ep in installed_distribution().entry_points if ep.group == ENTRY_POINT_GROUP}
    assert set(OUR_CLASSES) <= names


def test_stock_lookup_finds_every_class_of_ours_in_a_fresh_interpreter():
    code = "import os, nnunetv2\nfrom nnunetv2.utilities.find_class_by_name import recursive_find_python_class\n"
    for name, (folder, _) in sorted(OUR_CLASSES.items()):
        code += (f"cls = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], '{folder}'), '{name}', "
                 f"'nnunetv2.{folder.replace('/', '.')}')\nprint(cls.__module__, cls.__name__)\n")
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr
    found = [line.split() for line in result.stdout.splitlines()]
    assert found == [[module, name] for name, (_, module) in sorted(OUR_CLASSES.items())]


def test_trainer_lookup_used_by_train_and_predict_finds_our_trainer():
    result = fresh_python(
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name\n"
        "print(recursive_find_trainer_class_by_name('DSMMTeacherTrainer').__module__)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nnunet_dsmm.trainers.teacher"


def test_stock_classes_are_still_found_and_unknown_names_still_fail():
    result = fresh_python(
        "import os, nnunetv2\n"
        "from nnunetv2.utilities.find_class_by_name import recursive_find_python_class as find\n"
        "p = os.path.join(nnunetv2.__path__[0], 'preprocessing')\n"
        "print(find(p, 'DefaultPreprocessor', 'nnunetv2.preprocessing').__name__)\n"
        "print(find(p, 'NoSuchClassAnywhere', 'nnunetv2.preprocessing'))\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["DefaultPreprocessor", "None"]


def test_interpreters_that_never_import_nnunet_do_not_load_it():
    result = fresh_python("import sys; print(any(m.startswith(('nnunetv2', 'torch')) for m in sys.modules))")
    assert result.stdout.strip() == "False"


def test_generic_top_level_names_are_not_claimed():
    result = fresh_python("import importlib.util as u; print([n for n in ('trainers', 'planners') "
                          "if u.find_spec(n) is not None])")
    assert result.stdout.strip() == "[]", "the distribution must not install top-level 'trainers'/'planners'"
