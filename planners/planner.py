"""DSMM planners: nnU-Net's default planning and its residual-encoder presets (topologies
unchanged), each written under its own plans name with ``DSMMPreprocessor`` and data identifiers
``<plans name>_<configuration>``, so that stock nnU-Net's preprocessed data is never reused or
overwritten (nnU-Net's ResEnc planners share ``nnUNetPlans_<configuration>`` with its default one)."""

from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    nnUNetPlannerResEncL,
    nnUNetPlannerResEncM,
    nnUNetPlannerResEncXL,
)

PLANS_NAME = "DSMMPlans"
PREPROCESSOR_NAME = "DSMMPreprocessor"


class DSMMPlanning:
    """Mixin for an nnU-Net planner: our preprocessor, our plans name, our data identifiers."""

    #: plans identifier unless ``-overwrite_plans_name`` gives another
    dsmm_plans_name: str = PLANS_NAME

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float | None = None,
                 preprocessor_name: str = PREPROCESSOR_NAME, plans_name: str | None = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        # nnUNetv2_plan_* always passes its own default preprocessor name; ours is required here
        # because the default one shifts channels when a file is absent.
        if preprocessor_name == "DefaultPreprocessor":
            preprocessor_name = PREPROCESSOR_NAME
        memory = {} if gpu_memory_target_in_gb is None else {"gpu_memory_target_in_gb": gpu_memory_target_in_gb}
        super().__init__(dataset_name_or_id, preprocessor_name=preprocessor_name,
                         plans_name=plans_name or self.dsmm_plans_name,
                         overwrite_target_spacing=overwrite_target_spacing, suppress_transpose=suppress_transpose,
                         **memory)

    def generate_data_identifier(self, configuration_name: str) -> str:
        return f"{self.plans_identifier}_{configuration_name}"


class DSMMPlanner(DSMMPlanning, ExperimentPlanner):
    """nnU-Net's default planner (PlainConvUNet), written as ``DSMMPlans``."""


class DSMMPlannerResEncM(DSMMPlanning, nnUNetPlannerResEncM):
    """nnU-Net's ResEnc M preset (~9-11 GB of GPU memory), written as ``DSMMResEncUNetMPlans``."""

    dsmm_plans_name = "DSMMResEncUNetMPlans"


class DSMMPlannerResEncL(DSMMPlanning, nnUNetPlannerResEncL):
    """nnU-Net's ResEnc L preset (~24 GB of GPU memory), written as ``DSMMResEncUNetLPlans``."""

    dsmm_plans_name = "DSMMResEncUNetLPlans"


class DSMMPlannerResEncXL(DSMMPlanning, nnUNetPlannerResEncXL):
    """nnU-Net's ResEnc XL preset (~40 GB of GPU memory), written as ``DSMMResEncUNetXLPlans``."""

    dsmm_plans_name = "DSMMResEncUNetXLPlans"
