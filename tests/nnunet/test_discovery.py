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

from nnunet_dsmm.nnunet.discovery import ENTRY_POINT_GROUP

#: nnU-Net's base class of each kind of class it looks up by name, and the folder it searches for it
NNUNET_KINDS = (("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer", "training/nnUNetTrainer"),
                ("nnunetv2.experiment_planning.experiment_planners.default_experiment_planner",
                 "ExperimentPlanner", "experiment_planning"),
                ("nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
                 "DatasetFingerprintExtractor", "experiment_planning"),
                ("nnunetv2.preprocessing.preprocessors.default_preprocessor", "DefaultPreprocessor", "preprocessing"))


def classes_of_ours() -> dict[str, tuple[str, str]]:
    """Every trainer, planner, fingerprint extractor and preprocessor class defined in our package (bases
    named ``...Base`` excepted): class name -> (nnU-Net folder it is looked up in, module that defines it).
    Read from the code, so that a new variant without an entry point fails the lookup tests below."""
    import importlib
    import pkgutil

    import nnunet_dsmm.planners
    import nnunet_dsmm.trainers

    kinds = [(getattr(importlib.import_module(module), name), folder) for module, name, folder in NNUNET_KINDS]
    found = {}
    for package in (nnunet_dsmm.trainers, nnunet_dsmm.planners):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            for cls in vars(importlib.import_module(info.name)).values():
                if not isinstance(cls, type) or cls.__module__ != info.name or cls.__name__.endswith("Base"):
                    continue
                folder = next((folder for base, folder in kinds if issubclass(cls, base)), None)
                if folder is not None:
                    found[cls.__name__] = (folder, info.name)
    return found


OUR_CLASSES = classes_of_ours()


def test_the_classes_of_ours_are_found_in_the_code():
    assert {"DSMMTrainer", "DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMPlanner", "DSMMPreprocessor",
            "DSMMFingerprintExtractor"} <= set(OUR_CLASSES)
    assert len([name for name in OUR_CLASSES if name.startswith("DSMMTrainer")]) > 10


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
