"""Where nnU-Net keeps a dataset and a trained model, with an error that says what to do when
they are not there."""

from __future__ import annotations

import os

from nnunet_dsmm.errors import DSMMError


class LocationError(DSMMError, FileNotFoundError):
    """A dataset or trained model is not where nnU-Net keeps it (or nnU-Net's folders are not set)."""


def dataset_name(dataset: str) -> str:
    """``DatasetXXX_Name`` of a dataset ID or name, as nnU-Net finds it in its folders."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:  # nnU-Net's "could not find a dataset with the ID ..."
        raise LocationError(f"nnunet-dsmm: dataset {dataset!r}: {error}") from None


def raw_dataset_folder(dataset: str) -> str:
    """``$nnUNet_raw/DatasetXXX_Name`` of a dataset ID or name."""
    from nnunetv2.paths import nnUNet_raw

    if not nnUNet_raw.is_set():
        raise LocationError("nnunet-dsmm: the environment variable nnUNet_raw is not set (or give the folder)")
    return os.path.join(str(nnUNet_raw), dataset_name(dataset))


def trained_model_folder(dataset: str, trainer: str, plans: str, configuration: str, fold: int | str,
                         results_root: str | None = None) -> str:
    """The output folder of ``nnUNetv2_train DATASET CONFIGURATION FOLD -p PLANS -tr TRAINER`` under
    ``results_root`` (default: ``$nnUNet_results``)."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier, get_output_folder

    if results_root is None:
        folder = get_output_folder(dataset_name(dataset), trainer, plans, configuration)
    else:
        folder = os.path.join(results_root, dataset_name(dataset),
                              convert_trainer_plans_config_to_identifier(trainer, plans, configuration))
    if not os.path.isdir(os.path.join(folder, f"fold_{fold}")):
        root = f"nnUNet_results={results_root} " if results_root else ""
        raise LocationError(f"nnunet-dsmm: no trained model at {os.path.join(folder, f'fold_{fold}')}; train it "
                            f"with {root}nnUNetv2_train {dataset} {configuration} {fold} -p {plans} -tr {trainer}")
    return folder
