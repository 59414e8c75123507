"""The benchmark run: build every trainer on one plan and device, time their training steps
round-robin on identical batches, measure their peak memory, and time prediction per case."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import torch

from nnunet_dsmm.benchmark.batches import batch_for, loader_batches, synthetic_batches
from nnunet_dsmm.benchmark.memory import CPU_MEMORY_STEPS, PeakMemory, resident_bytes
from nnunet_dsmm.benchmark.runtime import describe_environment, synchronize, temporary_environment
from nnunet_dsmm.benchmark.settings import REFERENCE_TRAINER, TARGET_RATIOS, BenchmarkError, BenchmarkSettings


def trainer_class(name: str):
    """nnUNetTrainer, or a DSMM trainer by its registered name."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_dsmm.nnunet.discovery import find_registered_class

    found = nnUNetTrainer if name == REFERENCE_TRAINER else find_registered_class(name)
    if not (isinstance(found, type) and issubclass(found, nnUNetTrainer)):
        raise BenchmarkError(f"nnunet-dsmm: unknown trainer {name!r} (nnUNetTrainer or a DSMM trainer)")
    return found


def random_stage_checkpoints(trainer: type, plans: dict, configuration: str, dataset_json: dict,
                             folder: str) -> dict[str, str]:
    """Randomly initialised checkpoints of the earlier stages ``trainer`` builds on, as the
    environment variables that point the trainer at them."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_dsmm.trainers.stages import build_stage_network

    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    channels = determine_num_input_channels(manager, config, dataset_json)
    variables = {}
    for role, stage_trainer in getattr(trainer, "earlier_stages", dict)().items():
        path = os.path.join(folder, f"{stage_trainer.__name__}.pth")
        if not os.path.isfile(path):
            network = build_stage_network(stage_trainer, role, manager, config, channels,
                                          manager.get_label_manager(dataset_json))
            torch.save({"network_weights": network.state_dict()}, path)
        variables[role.override_variable] = path
    return variables


def preprocessed_placeholder(plans: dict, configuration: str, channels: int, root: str) -> str:
    """An nnU-Net preprocessed folder with one tiny case: nnU-Net's ``initialize`` infers its dataset
    format from that folder. Synthetic batches never read it."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy

    folder = os.path.join(root, plans["dataset_name"], plans["configurations"][configuration]["data_identifier"])
    os.makedirs(folder)
    nnUNetDatasetNumpy.save_case(np.zeros((channels, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 4), np.int8),
                                 {"spacing": [1.0, 1.0, 1.0]}, os.path.join(folder, "placeholder"))
    return root


def _measured_step(trainer, batch: dict, measure_memory: bool) -> tuple[float, int | None]:
    """Seconds and, if asked, peak memory (above the trainer's state) of one ``train_step``."""
    trainer.optimizer.zero_grad(set_to_none=True)
    with PeakMemory(trainer.device) if measure_memory else contextlib.nullcontext() as memory:
        start = time.perf_counter()
        trainer.train_step(batch)
        synchronize(trainer.device)
        elapsed = time.perf_counter() - start
    trainer.optimizer.zero_grad(set_to_none=True)
    return elapsed, memory.peak if measure_memory else None


def _predictors(trainers: dict, names: Sequence[str], settings: BenchmarkSettings) -> dict:
    """nnU-Net's predictor for each model, with the weights it had after building (as ``nnUNetv2_predict``)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    reference = trainers[REFERENCE_TRAINER]
    with contextlib.redirect_stdout(io.StringIO()):
        mirror_axes = reference.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3]
    predictors = {}
    for name in names:
        trainer = trainers[name]
        network = type(trainer).build_network_architecture(
            trainer.plans_manager, trainer.configuration_manager, trainer.num_input_channels,
            trainer.label_manager.num_segmentation_heads, enable_deep_supervision=False).to(trainer.device).eval()
        with contextlib.redirect_stdout(io.StringIO()):
            predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=settings.use_mirroring,
                                        perform_everything_on_device=trainer.device.type == "cuda",
                                        device=trainer.device, verbose=False, verbose_preprocessing=False,
                                        allow_tqdm=False)
            predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager,
                                            [copy.deepcopy(network.state_dict())], trainer.dataset_json, name,
                                            mirror_axes if settings.use_mirroring else None)
        predictors[name] = predictor
    return predictors


def _timed(function: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        function()
    synchronize(device)
    return time.perf_counter() - start


def _time_rounds(jobs: dict[str, Callable[[], object]], repeats: int, device: torch.device, what: str,
                 log: Callable[[str], None]) -> dict:
    """Median seconds of each job, alternating between jobs; the first round warms up."""
    seconds = {name: [] for name in jobs}
    for repeat in range(repeats + 1):
        for name, job in jobs.items():
            elapsed = _timed(job, device)
            if repeat > 0:
                seconds[name].append(elapsed)
        log(f"{what} round {repeat + 1}/{repeats + 1} done")
    return {name: {"median_s": statistics.median(values), "seconds": values} for name, values in seconds.items()}


def _time_prediction(predictors: dict, case: torch.Tensor, settings: BenchmarkSettings, device: torch.device,
                     log: Callable[[str], None]) -> dict:
    """Seconds per case of nnU-Net's sliding-window prediction for each model, alternating."""
    missing = case.clone()
    if len(case) > 1:
        missing[1] = 0  # one missing modality
    jobs = {name: (lambda p=predictor: p.predict_logits_from_preprocessed_data(missing))
            for name, predictor in predictors.items()}
    result = {"case_shape": list(case.shape[1:]), "use_mirroring": settings.use_mirroring, "tile_step_size": 0.5,
              **_time_rounds(jobs, settings.prediction_repeats, device, "prediction", log)}
    for name in predictors:
        result[name]["ratio"] = result[name]["median_s"] / result[REFERENCE_TRAINER]["median_s"]
    return result


def _time_combinations(predictors: dict, case: torch.Tensor, settings: BenchmarkSettings, device: torch.device,
                       log: Callable[[str], None]) -> dict:
    """Seconds for all 2^M - 1 channel combinations of one case with the DSMMTrainer model: one at a
    time (as that many ``nnUNetv2_predict`` runs predict, without their start-up and file I/O) and
    batched (as ``evaluate`` predicts), next to one stock prediction of the complete case."""
    from nnunet_dsmm.evaluation.prediction import default_combinations_per_batch, predict_logits_of_combinations
    from nnunet_dsmm.model.modalities import all_combinations

    codes = torch.tensor(all_combinations(len(case)), dtype=case.dtype)
    volumes = case[None] * codes.reshape(*codes.shape, *[1] * (case.ndim - 1))
    dsmm = predictors["DSMMTrainer"]
    per_batch = default_combinations_per_batch(device.type) or len(volumes)
    jobs = {"stock, one prediction": lambda: predictors[REFERENCE_TRAINER].predict_logits_from_preprocessed_data(case),
            "one combination at a time": lambda: [dsmm.predict_logits_from_preprocessed_data(v) for v in volumes],
            "batched combinations": lambda: [predict_logits_of_combinations(dsmm, volumes[i:i + per_batch])
                                             for i in range(0, len(volumes), per_batch)]}
    result = {"combinations": len(codes), "combinations_per_batch": per_batch,
              **_time_rounds(jobs, settings.prediction_repeats, device, "combinations", log)}
    for name in jobs:
        result[name]["ratio"] = result[name]["median_s"] / result["stock, one prediction"]["median_s"]
    return result


def run_benchmark(plans: dict, dataset_json: dict, configuration: str, settings: BenchmarkSettings,
                  source: str, log: Callable[[str], None] = print) -> dict:
    """Time and measure nnUNetTrainer and ``settings.trainers`` on one plan; returns the report dict."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from torch._dynamo.eval_frame import OptimizedModule

    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("nnunet-dsmm: -device cuda but no CUDA device is visible")
    if configuration not in plans["configurations"]:
        raise BenchmarkError(f"nnunet-dsmm: configuration {configuration!r} is not in plans {source}; it has "
                             f"{', '.join(plans['configurations'])}")
    names = [REFERENCE_TRAINER] + [n for n in settings.trainers if n != REFERENCE_TRAINER]
    classes = {name: trainer_class(name) for name in names}
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    with tempfile.TemporaryDirectory(prefix="dsmm_benchmark_") as tmp:
        paths = {"nnUNet_results": tmp}  # nnU-Net writes a log per trainer: not into the user's results
        if not settings.real_batches:
            paths["nnUNet_preprocessed"] = preprocessed_placeholder(
                plans, configuration, len(dataset_json["channel_names"]), os.path.join(tmp, "preprocessed"))
        with temporary_environment(DSMM_TEXT_ENCODER="untrained", **paths):
            trainers = {}
            for name in names:
                log(f"building {name} ...")
                stages = random_stage_checkpoints(classes[name], plans, configuration, dataset_json, tmp)
                with temporary_environment(**stages), contextlib.redirect_stdout(io.StringIO()):
                    trainer = classes[name]({**copy.deepcopy(plans), "continue_training": False}, configuration,
                                            0, dataset_json, device)
                    trainer.initialize()
                trainer.network.train()
                trainers[name] = trainer
            reference: nnUNetTrainer = trainers[REFERENCE_TRAINER]
            batch_size = settings.batch_size or reference.configuration_manager.batch_size
            total = settings.warmup + settings.steps
            if settings.real_batches:
                reference.batch_size = batch_size
                batches = loader_batches(reference, total)
            else:
                batches = synthetic_batches(reference, total, batch_size, settings.complete_share, generator)
            step_seconds = {name: [] for name in names}
            step_peaks = {name: [] for name in names}
            # CUDA: the allocator's peak during the timed steps. CPU: first a few steps with every
            # tensor mapped on its own (median of their peaks), then the timed steps without that
            cuda = device.type == "cuda"
            if not cuda and PeakMemory.cpu_readable() and PeakMemory.cpu_exact():
                for name in names:
                    peaks = [_measured_step(trainers[name], batch_for(trainers[name], batches[0]), True)[1]
                             for _ in range(CPU_MEMORY_STEPS)]
                    step_peaks[name] = [statistics.median(peaks)]
                PeakMemory.cpu_exact(False)
                log("memory steps done")
            for index, batch in enumerate(batches):
                for name in names:
                    seconds, peak = _measured_step(trainers[name], batch_for(trainers[name], batch), cuda)
                    if index >= settings.warmup:
                        step_seconds[name].append(seconds)
                        if cuda:
                            step_peaks[name].append(peak)
                log(f"training round {index + 1}/{total} done" + (" (warm-up)" if index < settings.warmup else ""))
            training = {}
            for name in names:
                trainer = trainers[name]
                peaks = [p for p in step_peaks[name] if p is not None]
                resident = resident_bytes(trainer)
                training[name] = {
                    "median_ms": 1000 * statistics.median(step_seconds[name]),
                    "step_ms": [1000 * s for s in step_seconds[name]],
                    "resident_bytes": resident,
                    "step_peak_bytes": max(peaks) if peaks else None,
                    "peak_memory_bytes": resident + max(peaks) if peaks else None,
                    "compiled": isinstance(trainer.network, OptimizedModule),
                }
            base = training[REFERENCE_TRAINER]
            for entry in training.values():
                entry["time_ratio"] = entry["median_ms"] / base["median_ms"]
                entry["memory_ratio"] = (entry["peak_memory_bytes"] / base["peak_memory_bytes"]
                                         if entry["peak_memory_bytes"] and base["peak_memory_bytes"] else None)
            prediction = combinations = None
            if settings.prediction and "DSMMTrainer" in trainers:
                predictors = _predictors(trainers, [REFERENCE_TRAINER, "DSMMTrainer"], settings)
                case_shape = [round(s) for s in reference.configuration_manager.median_image_size_in_voxels]
                case = torch.randn(reference.num_input_channels, *case_shape, generator=generator)
                prediction = _time_prediction(predictors, case, settings, device, log)
                if settings.combinations:
                    combinations = _time_combinations(predictors, case, settings, device, log)
    config = reference.configuration_manager
    return {
        "environment": describe_environment(device),
        "plan": {"source": source, "configuration": configuration, "patch_size": list(config.patch_size),
                 "batch_size": batch_size,
                 "features_per_stage": list(config.network_arch_init_kwargs.get("features_per_stage", [])),
                 "input_channels": reference.num_input_channels},
        "settings": {**asdict(settings), "trainers": names, "mixed_precision": device.type == "cuda"},
        "training": training,
        "prediction": prediction,
        "combinations": combinations,
        "targets": TARGET_RATIOS,
    }
