"""The plans a benchmark runs on: a registered synthetic plan, or a preprocessed dataset's own plans."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from nnunet_dsmm.benchmark.settings import BenchmarkError
from nnunet_dsmm.data.brats import BRATS_CHANNELS, brats_dataset_json

SYNTHETIC_CONFIGURATION = "3d_fullres"


@dataclass(frozen=True)
class SyntheticPlan:
    """A 3d_fullres PlainConvUNet plan of the kind nnU-Net makes, for four-channel BraTS-style data."""

    patch_size: tuple[int, int, int]
    features_per_stage: tuple[int, ...]
    batch_size: int
    #: a preprocessed case of this size is predicted in the inference benchmark
    case_shape: tuple[int, int, int]
    description: str


SYNTHETIC_PLANS = {
    "brats": SyntheticPlan((128, 128, 128), (32, 64, 128, 256, 320, 320), 2, (140, 171, 137),
                           "nnU-Net's 3d_fullres plan for BraTS 2021 (6 stages, 32-320 features, 128^3 patch, "
                           "batch 2; case of the median BraTS size)"),
    "cpu-small": SyntheticPlan((40, 40, 32), (32, 64, 128, 256), 2, (56, 56, 48),
                               "the plan nnU-Net makes for the 40^3 synthetic test data (4 stages, 32-256 "
                               "features, 40x40x32 patch, batch 2); sized for CPUs and CI"),
}


def synthetic_plans(name: str) -> tuple[dict, dict]:
    """(plans, dataset_json) of the registered synthetic plan ``name`` (configuration ``3d_fullres``)."""
    if name not in SYNTHETIC_PLANS:
        raise BenchmarkError(f"nnunet-dsmm: unknown synthetic plan {name!r}; known: {', '.join(SYNTHETIC_PLANS)}")
    plan = SYNTHETIC_PLANS[name]
    stages = len(plan.features_per_stage)
    channels = len(BRATS_CHANNELS)
    architecture = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages, "features_per_stage": list(plan.features_per_stage),
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1), "n_conv_per_stage": [2] * stages,
            "n_conv_per_stage_decoder": [2] * (stages - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": f"DSMMBenchmark_{name}", "preprocessor_name": "DSMMPreprocessor",
        "batch_size": plan.batch_size, "patch_size": list(plan.patch_size),
        "median_image_size_in_voxels": list(plan.case_shape), "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"] * channels, "use_mask_for_norm": [True] * channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": architecture, "batch_dice": False,
    }
    plans = {
        "dataset_name": f"Dataset999_DSMMBenchmark{name.replace('-', '').title()}", "plans_name": "DSMMPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": list(plan.case_shape), "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {SYNTHETIC_CONFIGURATION: configuration}, "experiment_planner_used": "DSMMPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 5.0, "mean": 0.0, "median": 0.0, "min": -5.0, "percentile_00_5": -3.0,
                     "percentile_99_5": 3.0, "std": 1.0} for c in range(channels)},
    }
    return plans, brats_dataset_json(0, f"DSMMBenchmark-{name}")


def preprocessed_plans(dataset: str, plans_name: str) -> tuple[dict, dict]:
    """(plans, dataset_json) of a dataset in ``nnUNet_preprocessed``."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_preprocessed.is_set():
        raise BenchmarkError("nnunet-dsmm: the environment variable nnUNet_preprocessed is not set")
    folder = os.path.join(str(nnUNet_preprocessed), maybe_convert_to_dataset_name(dataset))
    plans_file = os.path.join(folder, f"{plans_name}.json")
    if not os.path.isfile(plans_file):
        raise BenchmarkError(f"nnunet-dsmm: no plans at {plans_file}; run nnUNetv2_plan_and_preprocess -d {dataset} "
                             f"-fpe DSMMFingerprintExtractor -pl DSMMPlanner first")
    with open(plans_file) as f:
        plans = json.load(f)
    with open(os.path.join(folder, "dataset.json")) as f:
        return plans, json.load(f)
