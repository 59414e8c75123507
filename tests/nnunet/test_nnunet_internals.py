"""The private nnU-Net names the package relies on (``nnunet_dsmm.nnunet.nnunet_internals.GUARDED``) exist in
the installed nnU-Net, and no module outside ``nnunet_internals`` uses or overrides another one."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

from nnunet_dsmm.nnunet import nnunet_internals
from nnunet_dsmm.nnunet.nnunet_internals import GUARDED, PrivateName
from tests.conftest import build_trainer

GUARDED_PATHS = {name.path for name in GUARDED}
#: nnU-Net's classes the package subclasses or calls into
NNUNET_CLASSES = (
    "nnunetv2.training.nnUNetTrainer.nnUNetTrainer:nnUNetTrainer",
    "nnunetv2.inference.predict_from_raw_data:nnUNetPredictor",
    "nnunetv2.training.logging.nnunet_logger:MetaLogger",
    "nnunetv2.training.logging.nnunet_logger:LocalLogger",
    "nnunetv2.experiment_planning.experiment_planners.default_experiment_planner:ExperimentPlanner",
    "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor:DatasetFingerprintExtractor",
    "nnunetv2.preprocessing.preprocessors.default_preprocessor:DefaultPreprocessor",
    "nnunetv2.utilities.plans_handling.plans_handler:PlansManager",
    "nnunetv2.utilities.plans_handling.plans_handler:ConfigurationManager",
    "nnunetv2.utilities.label_handling.label_handling:LabelManager",
)


def load_class(owner: str) -> type:
    module, name = owner.split(":")
    return getattr(importlib.import_module(module), name)


def first_missing(root: object, path: str) -> str | None:
    """The first attribute of the dotted ``path`` that ``root`` lacks (None if all are there)."""
    for part in path.split("."):
        if not hasattr(root, part):
            return part
        root = getattr(root, part)
    return None


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return build_trainer("DSMMTrainer", tmp_path_factory.mktemp("internals"))


@pytest.mark.parametrize("name", GUARDED, ids=lambda name: name.path)
def test_every_guarded_private_name_exists_in_the_installed_nnunet(name: PrivateName, request):
    owner = root = load_class(name.owner)
    if name.on_instance:
        root = request.getfixturevalue("trainer")
        assert isinstance(root, owner)
    missing = first_missing(root, name.path)
    assert missing is None, (f"the installed nnU-Net's {name.owner} has no {missing!r} (of {name.path}), which "
                             f"nnunet-dsmm relies on: {name.use}; adapt nnunet_dsmm/nnunet/nnunet_internals.py")


def test_a_missing_name_is_named():
    trainer_class = load_class(nnunet_internals.TRAINER)
    assert first_missing(trainer_class, "_build_loss") is None
    assert first_missing(trainer_class, "_build_loss.__name__.no_such_part") == "no_such_part"
    assert first_missing(trainer_class, "_no_such_hook") == "_no_such_hook"


def package_modules() -> list[str]:
    """Every module of the package (its trainers and planners live in folders of their own)."""
    import nnunet_dsmm.planners
    import nnunet_dsmm.trainers

    names = []
    for package in (nnunet_dsmm, nnunet_dsmm.trainers, nnunet_dsmm.planners):
        names += [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                  if not info.name.startswith("nnunet_dsmm._build")]
    return names


def private_nnunet_names() -> set[str]:
    names = set()
    for owner in NNUNET_CLASSES:
        names |= {n for n in dir(load_class(owner)) if n.startswith("_") and not n.startswith("__")}
    return names


def test_every_override_of_a_private_nnunet_hook_is_guarded():
    private = private_nnunet_names()
    overrides = set()
    for module_name in package_modules():
        module = importlib.import_module(module_name)
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == module_name:
                overrides |= {f"{cls.__name__}.{n}" for n in vars(cls) if n in private}
    unguarded = sorted(o for o in overrides if o.split(".")[1] not in GUARDED_PATHS)
    assert not unguarded, f"overrides of private nnU-Net hooks missing from nnunet_internals.GUARDED: {unguarded}"
    assert {"DSMMTrainer._build_loss", "DSMMTrainerBase._set_batch_size_and_oversample"} <= overrides


def test_private_nnunet_names_are_used_in_nnunet_internals_only():
    private = private_nnunet_names() | {"local_logger", "my_fantastic_logging"}
    found = []
    for module_name in package_modules():
        path = Path(importlib.import_module(module_name).__file__)
        if module_name == nnunet_internals.__name__:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"(super\(\))?\.(\w+)", line):
                # an override calling nnU-Net's own hook is fine when the hook is guarded
                if match.group(2) in private and not (match.group(1) and match.group(2) in GUARDED_PATHS):
                    found.append(f"{path.name}:{number}: {match.group(2)}")
    assert not found, f"private nnU-Net names used outside nnunet_dsmm/nnunet/nnunet_internals.py: {found}"
