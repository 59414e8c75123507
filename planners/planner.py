"""``DSMMPlanner``: nnU-Net's default planning (topology unchanged), written as ``DSMMPlans``
with its own data identifier and ``DSMMPreprocessor``."""

from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

PLANS_NAME = "DSMMPlans"
PREPROCESSOR_NAME = "DSMMPreprocessor"


class DSMMPlanner(ExperimentPlanner):
    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = PREPROCESSOR_NAME, plans_name: str = PLANS_NAME,
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        # nnUNetv2_plan_* always passes its own default preprocessor name; ours is required here
        # because the default one shifts channels when a file is absent.
        if preprocessor_name == "DefaultPreprocessor":
            preprocessor_name = PREPROCESSOR_NAME
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
