"""``DSMMPreprocessor``: nnU-Net preprocessing with channels placed by file suffix, missing
channels zero-filled (and exactly zero after normalisation), and each case's availability stored
in its properties (``raw_data.AVAILABLE_CHANNELS_KEY``). Serves ``nnUNetv2_preprocess`` and
``nnUNetv2_predict`` alike."""

from __future__ import annotations

import shutil

from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dsmm.data.raw_data import AVAILABLE_CHANNELS_KEY, case_from_files, num_channels, read_case, training_cases


class DSMMPreprocessor(DefaultPreprocessor):
    def run_case(self, image_files, seg_file, plans_manager, configuration_manager, dataset_json):
        if isinstance(dataset_json, str):
            dataset_json = load_json(dataset_json)
        case = case_from_files(image_files, seg_file, dataset_json)
        data, seg, properties, available = read_case(case, num_channels(dataset_json),
                                                     plans_manager.image_reader_writer_class)
        data, seg, properties = self.run_case_npy(data, seg, properties, plans_manager, configuration_manager,
                                                  dataset_json)
        data[~available] = 0
        properties[AVAILABLE_CHANNELS_KEY] = [bool(a) for a in available]
        return data, seg, properties

    def run(self, dataset_name_or_id, configuration_name: str, plans_identifier: str, num_processes: int):
        """Check every case's file names first; if a case fails later, remove the partial output."""
        dataset_name = maybe_convert_to_dataset_name(dataset_name_or_id)
        dataset_json = load_json(join(nnUNet_preprocessed, dataset_name, "dataset.json"))
        training_cases(join(nnUNet_raw, dataset_name), dataset_json)
        plans = PlansManager(join(nnUNet_preprocessed, dataset_name, plans_identifier + ".json"))
        output_directory = join(nnUNet_preprocessed, dataset_name,
                                plans.get_configuration(configuration_name).data_identifier)
        try:
            super().run(dataset_name_or_id, configuration_name, plans_identifier, num_processes)
        except BaseException:
            shutil.rmtree(output_directory, ignore_errors=True)
            raise

