"""The bound of the complete-then-distill study: ``DSMMTrainerOracleTeacher``, whose teacher T sees the true
complete case instead of M_rec's completion x̂_full (Eq. 4 with perfect completion), and the preprocessing of
the true complete cases it trains on."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from glob import glob

from batchgenerators.utilities.file_and_folder_operations import join, load_pickle, write_pickle

from nnunet_dsmm.data.raw_data import (
    AVAILABLE_CHANNELS_KEY,
    available_channels,
    complete_training_cases,
    num_channels,
    raw_error,
)
from nnunet_dsmm.nnunet.locations import raw_dataset_folder
from nnunet_dsmm.trainers.base import StepBatch
from nnunet_dsmm.trainers.dsmm import DSMMTrainer


def preprocess_complete_cases(raw_folder: str, source_folder: str, target_folder: str, plans_manager,
                              configuration_manager, dataset_json: dict) -> None:
    """Preprocess the true complete training cases (``raw_data.complete_training_cases``) with the plan's
    preprocessor, as ``source_folder`` was, into ``target_folder``; each case keeps the availability it has in
    ``source_folder``. Written in a folder of this process and moved into place, so that a failure leaves
    nothing and trainings that start together agree."""
    cases = {case.name: case for case in complete_training_cases(raw_folder, dataset_json)}
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    partial = f"{target_folder}.partial-{os.getpid()}"
    os.makedirs(partial)
    try:
        for pkl in sorted(glob(join(source_folder, "*.pkl"))):
            name = os.path.basename(pkl)[: -len(".pkl")]
            if name not in cases:
                raise raw_error(name, pkl, f"preprocessed, but not a training case of {raw_folder}")
            case, output = cases[name], join(partial, name)
            preprocessor.run_case_save(output, [case.images[c] for c in sorted(case.images)], case.label,
                                       plans_manager, configuration_manager, dataset_json)
            properties = load_pickle(output + ".pkl")
            available = available_channels(load_pickle(pkl), num_channels(dataset_json))
            properties[AVAILABLE_CHANNELS_KEY] = available.tolist()
            write_pickle(properties, output + ".pkl")
        try:
            os.rename(partial, target_folder)
        except OSError:
            if not os.path.isdir(target_folder):  # not a training that finished the same folder first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


class DSMMTrainerOracleTeacher(DSMMTrainer):
    """Complete-then-distill study, the bound on completion: T sees the true complete case, the student the
    modality-dropped real channels as in ``DSMMTrainer``. The true channels come from the raw dataset's
    ``droppedTr`` (``nnunet_dsmm synth`` keeps them there), preprocessed once beside the plan's data; without
    that folder it refuses to run. If even this bound does not beat "+ PGMA", distillation, not completion,
    is what falls short."""

    #: x̂_full is the step's data as it is, which here holds every true channel
    complete_with_recovery = False
    #: appended to the plan's preprocessed folder for the complete cases
    complete_folder_suffix = "_complete"

    def initialize(self):
        self.complete_dataset_folder = self.preprocessed_dataset_folder + self.complete_folder_suffix
        if not os.path.isdir(self.complete_dataset_folder):
            preprocess_complete_cases(raw_dataset_folder(self.plans_manager.dataset_name),
                                      self.preprocessed_dataset_folder, self.complete_dataset_folder,
                                      self.plans_manager, self.configuration_manager, self.dataset_json)
        super().initialize()

    def get_tr_and_val_datasets(self):
        """nnU-Net's split, loaded from the complete cases (whose availability is the plan's data's)."""
        tr_keys, val_keys = self.do_split()
        return tuple(self.dataset_class(self.complete_dataset_folder, keys,
                                        folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
                     for keys in (tr_keys, val_keys))

    def step_batch(self, batch: dict, training: bool) -> StepBatch:
        """Training keeps the true channels of the missing modalities for T; ``segmentation_input`` still
        gives the student only (a modality-dropped subset of) the available ones."""
        step = super().step_batch(batch, training)
        return replace(step, data=batch["data"].to(self.device, non_blocking=True)) if training else step
