"""Where nnU-Net keeps a dataset and a trained model, with an error that says what to do when
they are not there."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from nnunet_dsmm.errors import DSMMError


class LocationError(DSMMError, FileNotFoundError):
    """A dataset or trained model is not where nnU-Net keeps it (or nnU-Net's folders are not set)."""


#: what each of nnU-Net's folders holds, for the message when its variable is unset
NNUNET_FOLDERS = {"nnUNet_raw": "the raw datasets", "nnUNet_preprocessed": "the plans and preprocessed data",
                  "nnUNet_results": "the trained models"}


def require_folder(variable: str) -> str:
    """The folder in nnU-Net's environment variable ``variable``; a ``LocationError`` when it is unset."""
    value = os.environ.get(variable)
    if not value:
        raise LocationError(f"nnunet-dsmm: the environment variable {variable} is not set; set it to the folder "
                            f"that holds {NNUNET_FOLDERS[variable]}, as for nnU-Net (export {variable}=/path/to/"
                            f"{variable}; see nnU-Net's documentation/setting_up_paths.md)")
    return value


def dataset_name(dataset: str) -> str:
    """``DatasetXXX_Name`` of a dataset ID or name, as nnU-Net finds it in its folders."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:  # nnU-Net's "could not find a dataset with the ID ..."
        raise LocationError(f"nnunet-dsmm: dataset {dataset!r}: {error}") from None


def raw_dataset_folder(dataset: str) -> str:
    """``$nnUNet_raw/DatasetXXX_Name`` of a dataset ID or name."""
    return os.path.join(require_folder("nnUNet_raw"), dataset_name(dataset))


def fold_name(value: str) -> int | str:
    """A fold as nnU-Net takes it on its command line: an integer, or ``all`` (the model trained on
    every case); for argparse's ``type``."""
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold is an integer or 'all', not {value!r}") from None


def as_folds(folds: int | str | Sequence[int | str]) -> list[int | str]:
    """One fold or several, as a list of integers and ``all`` (nnU-Net's ``use_folds``)."""
    return [f if f == "all" else int(f) for f in ([folds] if isinstance(folds, (int, str)) else folds)]


def trained_model_folder(dataset: str, trainer: str, plans: str, configuration: str,
                         folds: int | str | Sequence[int | str], results_root: str | None = None) -> str:
    """The output folder of ``nnUNetv2_train DATASET CONFIGURATION FOLD -p PLANS -tr TRAINER`` under
    ``results_root`` (default: ``$nnUNet_results``), checked to hold every fold of ``folds``."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier, get_output_folder

    if results_root is None:
        require_folder("nnUNet_results")
        folder = get_output_folder(dataset_name(dataset), trainer, plans, configuration)
    else:
        folder = os.path.join(results_root, dataset_name(dataset),
                              convert_trainer_plans_config_to_identifier(trainer, plans, configuration))
    for fold in as_folds(folds):
        if not os.path.isdir(os.path.join(folder, f"fold_{fold}")):
            root = f"nnUNet_results={results_root} " if results_root else ""
            raise LocationError(f"nnunet-dsmm: no trained model at {os.path.join(folder, f'fold_{fold}')}; train "
                                f"it with {root}nnUNetv2_train {dataset} {configuration} {fold} -p {plans} "
                                f"-tr {trainer}")
    return folder
