"""``nnunet_dsmm benchmark``: the cost of DSMM's training steps and prediction next to stock nnU-Net.

Every trainer is built on the same plan, configuration and device in one process. Training steps
are timed alternating between trainers (round-robin, after warm-up) on identical batches of the
same size. Peak memory is the trainer's resident state (weights, buffers, optimiser state, frozen
networks) plus the most memory a step needed above that: on CUDA the allocator's peak over the
timed steps, on CPU the resident-set peak of extra steps run before the timing (see ``PeakMemory``).
Prediction is nnU-Net's per-case
sliding window (``predict_logits_from_preprocessed_data``, as in ``nnUNetv2_predict``) with a stock
model and a DSMMTrainer model on the same case. Weights are random: the cost does not depend on
them, so no earlier stage and no CLIP weights are needed.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version

import numpy as np
import torch

REFERENCE_TRAINER = "nnUNetTrainer"
DEFAULT_TRAINERS = ("DSMMPretrainTrainer", "DSMMTrainer")
#: the issue's targets: DSMM's training step and peak memory, and prediction per case, over stock nnU-Net
TARGET_RATIOS = {"training_step_time": 2.5, "training_peak_memory": 2.5, "prediction_time": 1.05}
#: steps per trainer whose peak memory counts on CPU (run before the timed ones; median of their peaks)
CPU_MEMORY_STEPS = 3
BRATS_CHANNELS = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
BRATS_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


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
        raise ValueError(f"unknown synthetic plan {name!r}; known: {', '.join(SYNTHETIC_PLANS)}")
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
        "configurations": {"3d_fullres": configuration}, "experiment_planner_used": "DSMMPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 5.0, "mean": 0.0, "median": 0.0, "min": -5.0, "percentile_00_5": -3.0,
                     "percentile_99_5": 3.0, "std": 1.0} for c in range(channels)},
    }
    dataset_json = {"name": f"DSMMBenchmark-{name}", "channel_names": BRATS_CHANNELS, "labels": BRATS_LABELS,
                    "regions_class_order": [1, 2, 3], "numTraining": 0, "file_ending": ".nii.gz"}
    return plans, dataset_json


@dataclass
class BenchmarkSettings:
    device: str = "cuda"
    steps: int = 10
    warmup: int = 3
    #: share of synthetic samples that miss no modality (0: every sample misses 1 to M-1, the costliest case)
    complete_share: float = 0.0
    #: batches from nnU-Net's data loader (needs a preprocessed dataset) instead of random tensors
    real_batches: bool = False
    batch_size: int | None = None
    prediction: bool = True
    prediction_repeats: int = 3
    use_mirroring: bool = True
    seed: int = 0
    trainers: Sequence[str] = field(default_factory=lambda: list(DEFAULT_TRAINERS))

    def __post_init__(self):
        if self.steps < 1 or self.warmup < 0 or self.prediction_repeats < 1:
            raise ValueError("steps and prediction repeats must be at least 1, warm-up steps at least 0")
        if not 0.0 <= self.complete_share <= 1.0:
            raise ValueError(f"complete share must lie in [0, 1], got {self.complete_share}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


class PeakMemory:
    """Peak memory of a block above what was in use when it started: the CUDA allocator's
    statistics, or on CPU the peak resident set size, reset through ``/proc/self/clear_refs``.
    On CPU glibc serves allocations above 64 KiB by ``mmap`` once ``cpu_exact`` was called, so
    freed tensors leave the resident set at once and the figure does not depend on heap reuse.
    ``peak`` stays None where neither works (not Linux/glibc)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak: int | None = None
        self._start = 0

    @staticmethod
    def cpu_readable() -> bool:
        """Whether this system lets a process reset its peak resident set (Linux)."""
        return os.access("/proc/self/clear_refs", os.W_OK)

    @staticmethod
    def cpu_exact(exact: bool = True) -> bool:
        """With ``exact``, make glibc map every allocation above 64 KiB on its own (slower); without,
        serve allocations up to 32 MiB from the heap and keep up to 64 MiB of freed heap, as glibc's
        automatic thresholds end up doing in a training loop."""
        try:
            libc = ctypes.CDLL(None)
            if exact:
                return bool(libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024))
            return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024**2) and libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024**2))
        except (OSError, AttributeError):
            return False

    @staticmethod
    def _status_bytes(field_name: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{field_name} not in /proc/self/status")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            ctypes.CDLL(None).malloc_trim(0)
            self._start = self._status_bytes("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except (OSError, AttributeError):
            self._start = -1
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start >= 0:
            try:
                self.peak = self._status_bytes("VmHWM") - self._start
            except OSError:
                self.peak = None


def resident_bytes(trainer) -> int:
    """Bytes of the trainer's weights, buffers, frozen networks and optimiser state (not gradients)."""
    modules = [trainer.network] + [m for m in (getattr(trainer, "teacher", None),) if m is not None]
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    tensors += [v for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    unique = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(unique.values())


def trainer_class(name: str):
    """nnUNetTrainer, or a DSMM trainer by its registered name."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_dsmm.discovery import find_registered_class

    found = nnUNetTrainer if name == REFERENCE_TRAINER else find_registered_class(name)
    if not (isinstance(found, type) and issubclass(found, nnUNetTrainer)):
        raise ValueError(f"unknown trainer {name!r} (nnUNetTrainer or a DSMM trainer)")
    return found


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stage_checkpoints(plans: dict, configuration: str, dataset_json: dict, folder: str) -> dict[str, str]:
    """Randomly initialised stage-1 and stage-2 checkpoints for the DSMM trainers to load."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_dsmm.trainers.dsmm import PRETRAIN_CHECKPOINT_ENV
    from nnunet_dsmm.trainers.pretrain import TEACHER_CHECKPOINT_ENV, DSMMPretrainTrainer
    from nnunet_dsmm.trainers.teacher import DSMMTeacherTrainer

    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    channels = determine_num_input_channels(manager, config, dataset_json)
    heads = manager.get_label_manager(dataset_json).num_segmentation_heads
    paths = {}
    for env, network in ((TEACHER_CHECKPOINT_ENV, DSMMTeacherTrainer.build_network_architecture(
            manager, config, channels, heads, enable_deep_supervision=False)),
            (PRETRAIN_CHECKPOINT_ENV, DSMMPretrainTrainer.build_network_architecture(
                manager, config, channels, channels))):
        paths[env] = os.path.join(folder, f"{env.lower()}.pth")
        torch.save({"network_weights": network.state_dict()}, paths[env])
    return paths


def _preprocessed_placeholder(plans: dict, configuration: str, channels: int, root: str) -> str:
    """An nnU-Net preprocessed folder with one tiny case: nnU-Net's ``initialize`` infers its dataset
    format from that folder. Synthetic batches never read it."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy

    folder = os.path.join(root, plans["dataset_name"], plans["configurations"][configuration]["data_identifier"])
    os.makedirs(folder)
    nnUNetDatasetNumpy.save_case(np.zeros((channels, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 4), np.int8),
                                 {"spacing": [1.0, 1.0, 1.0]}, os.path.join(folder, "placeholder"))
    return root


def _synthetic_batches(reference, count: int, batch_size: int, complete_share: float,
                       generator: torch.Generator) -> list[dict]:
    """``count`` random batches in the form of ``reference``'s data loader: data with each sample's
    missing channels zeroed, random targets at every deep-supervision scale."""
    import torch.nn.functional as F

    patch = tuple(reference.configuration_manager.patch_size)
    channels, labels = reference.num_input_channels, reference.label_manager
    scales = reference._get_deep_supervision_scales()
    batches = []
    for b in range(count):
        available = torch.ones(batch_size, channels, dtype=torch.bool)
        for row in available:
            if torch.rand((), generator=generator) >= complete_share:
                missing = torch.randperm(channels, generator=generator)[: int(torch.randint(
                    1, channels, (), generator=generator))]
                row[missing] = False
        data = torch.randn(batch_size, channels, *patch, generator=generator) * available[..., None, None, None]
        if labels.has_regions:
            full = (torch.rand(batch_size, len(labels.foreground_regions), *patch, generator=generator) > 0.8).float()
        else:
            full = torch.randint(0, len(labels.all_labels), (batch_size, 1, *patch), generator=generator).float()
        targets = [full] + [F.interpolate(full, size=[round(p * s) for p, s in zip(patch, scale)], mode="nearest")
                            for scale in scales[1:]]
        keys = [f"benchmark_{b}_{i}" for i in range(batch_size)]
        batches.append({"data": data, "target": targets, "keys": keys, "available": available})
    return batches


def _loader_batches(trainer, count: int) -> list[dict]:
    """``count`` batches from nnU-Net's own training data loader (augmentation included, in-process)."""
    with _environment(nnUNet_n_proc_DA="0"), contextlib.redirect_stdout(io.StringIO()):
        loader, _ = trainer.get_dataloaders()
        return [next(loader) for _ in range(count)]


def _batch_for(trainer, batch: dict) -> dict:
    """The batch in the form the trainer's data loader would give it (deep-supervision targets or one)."""
    out = {k: v for k, v in batch.items() if k != "available"}
    if not trainer.enable_deep_supervision:
        out["target"] = batch["target"][0]
    if "available" in batch and hasattr(trainer, "availability"):
        trainer.availability.update(zip(batch["keys"], batch["available"]))
    return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measured_step(trainer, batch: dict, measure_memory: bool) -> tuple[float, int | None]:
    """Seconds and, if asked, peak memory (above the trainer's state) of one ``train_step``."""
    trainer.optimizer.zero_grad(set_to_none=True)
    with PeakMemory(trainer.device) if measure_memory else contextlib.nullcontext() as memory:
        start = time.perf_counter()
        trainer.train_step(batch)
        _synchronize(trainer.device)
        elapsed = time.perf_counter() - start
    trainer.optimizer.zero_grad(set_to_none=True)
    return elapsed, memory.peak if measure_memory else None


def _time_prediction(trainers: dict, names: Sequence[str], settings: BenchmarkSettings, case_shape,
                     generator: torch.Generator, log: Callable[[str], None]) -> dict:
    """Seconds per case of nnU-Net's sliding-window prediction for each model, alternating."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    reference = trainers[REFERENCE_TRAINER]
    channels = reference.num_input_channels
    case = torch.randn(channels, *case_shape, generator=generator)
    if channels > 1:
        case[1] = 0  # one missing modality
    with contextlib.redirect_stdout(io.StringIO()):
        mirror_axes = reference.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3]
    predictors = {}
    for name in names:
        trainer = trainers[name]
        network = type(trainer).build_network_architecture(
            trainer.plans_manager, trainer.configuration_manager, channels,
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
    seconds = {name: [] for name in names}
    for repeat in range(settings.prediction_repeats + 1):
        for name in names:
            _synchronize(reference.device)
            start = time.perf_counter()
            with torch.no_grad():
                predictors[name].predict_logits_from_preprocessed_data(case)
            _synchronize(reference.device)
            if repeat > 0:  # the first round warms up
                seconds[name].append(time.perf_counter() - start)
        log(f"prediction round {repeat + 1}/{settings.prediction_repeats + 1} done")
    result = {"case_shape": list(case_shape), "use_mirroring": settings.use_mirroring, "tile_step_size": 0.5}
    for name in names:
        result[name] = {"median_s": statistics.median(seconds[name]), "seconds": seconds[name]}
        result[name]["ratio"] = result[name]["median_s"] / result[REFERENCE_TRAINER]["median_s"]
    return result


def run_benchmark(plans: dict, dataset_json: dict, configuration: str, settings: BenchmarkSettings,
                  source: str, log: Callable[[str], None] = print) -> dict:
    """Time and measure nnUNetTrainer and ``settings.trainers`` on one plan; returns the report dict."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from torch._dynamo.eval_frame import OptimizedModule

    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("nnunet_dsmm benchmark: -device cuda but no CUDA device is visible")
    names = [REFERENCE_TRAINER] + [n for n in settings.trainers if n != REFERENCE_TRAINER]
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    with tempfile.TemporaryDirectory(prefix="dsmm_benchmark_") as tmp:
        checkpoints = _stage_checkpoints(plans, configuration, dataset_json, tmp)
        paths = {"nnUNet_results": tmp}  # nnU-Net writes a log per trainer: not into the user's results
        if not settings.real_batches:
            paths["nnUNet_preprocessed"] = _preprocessed_placeholder(
                plans, configuration, len(dataset_json["channel_names"]), os.path.join(tmp, "preprocessed"))
        with _environment(DSMM_TEXT_ENCODER="untrained", **paths, **checkpoints):
            trainers = {}
            for name in names:
                log(f"building {name} ...")
                with contextlib.redirect_stdout(io.StringIO()):
                    trainer = trainer_class(name)({**copy.deepcopy(plans), "continue_training": False},
                                                   configuration, 0, dataset_json, device)
                    trainer.initialize()
                trainer.network.train()
                trainers[name] = trainer
            reference: nnUNetTrainer = trainers[REFERENCE_TRAINER]
            batch_size = settings.batch_size or reference.configuration_manager.batch_size
            total = settings.warmup + settings.steps
            if settings.real_batches:
                reference.batch_size = batch_size
                batches = _loader_batches(reference, total)
            else:
                batches = _synthetic_batches(reference, total, batch_size, settings.complete_share, generator)
            step_seconds = {name: [] for name in names}
            step_peaks = {name: [] for name in names}
            # CUDA: the allocator's peak during the timed steps. CPU: first a few steps with every
            # tensor mapped on its own (median of their peaks), then the timed steps without that
            cuda = device.type == "cuda"
            if not cuda and PeakMemory.cpu_readable() and PeakMemory.cpu_exact():
                for name in names:
                    peaks = [_measured_step(trainers[name], _batch_for(trainers[name], batches[0]), True)[1]
                             for _ in range(CPU_MEMORY_STEPS)]
                    step_peaks[name] = [statistics.median(peaks)]
                PeakMemory.cpu_exact(False)
                log("memory steps done")
            for index, batch in enumerate(batches):
                for name in names:
                    seconds, peak = _measured_step(trainers[name], _batch_for(trainers[name], batch), cuda)
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
            prediction = None
            if settings.prediction and "DSMMTrainer" in trainers:
                case_shape = [round(s) for s in reference.configuration_manager.median_image_size_in_voxels]
                prediction = _time_prediction(trainers, [REFERENCE_TRAINER, "DSMMTrainer"], settings, case_shape,
                                              generator, log)
    config = reference.configuration_manager
    return {
        "environment": environment(device),
        "plan": {"source": source, "configuration": configuration, "patch_size": list(config.patch_size),
                 "batch_size": batch_size,
                 "features_per_stage": list(config.network_arch_init_kwargs.get("features_per_stage", [])),
                 "input_channels": reference.num_input_channels},
        "settings": {**asdict(settings), "trainers": names, "mixed_precision": device.type == "cuda"},
        "training": training,
        "prediction": prediction,
        "targets": TARGET_RATIOS,
    }


def environment(device: torch.device) -> dict:
    """Device name and the versions that the figures depend on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                              platform.machine())
    return {"device": device.type, "device_name": name, "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "nnunetv2": version("nnunetv2"),
            "nnunet_dsmm": version("nnunet-dsmm"), "python": platform.python_version()}


def format_report(report: dict) -> str:
    """A readable table of the report's figures, ratios and targets."""
    env, plan = report["environment"], report["plan"]
    gib = 1024**3
    lines = [f"Device {env['device_name']} ({env['device']}, {env['cpu_threads']} CPU threads), torch {env['torch']}, "
             f"nnunetv2 {env['nnunetv2']}, nnunet-dsmm {env['nnunet_dsmm']}",
             f"Plan {plan['source']} {plan['configuration']}: patch {plan['patch_size']}, batch {plan['batch_size']}, "
             f"features {plan['features_per_stage']}; mixed precision: {report['settings']['mixed_precision']}",
             "", f"{'training step':<28}{'median ms':>11}{'x nnU-Net':>11}{'peak GiB':>10}{'x nnU-Net':>11}"]
    for name, entry in report["training"].items():
        peak = entry["peak_memory_bytes"]
        memory = f"{peak / gib:>10.3f}{entry['memory_ratio']:>11.2f}" if peak else f"{'n/a':>10}{'n/a':>11}"
        lines.append(f"{name:<28}{entry['median_ms']:>11.1f}{entry['time_ratio']:>11.2f}{memory}")
    prediction = report["prediction"]
    if prediction:
        lines += ["", f"prediction, one case {prediction['case_shape']} (mirroring "
                      f"{'on' if prediction['use_mirroring'] else 'off'})"]
        for name in (REFERENCE_TRAINER, "DSMMTrainer"):
            lines.append(f"{name:<28}{prediction[name]['median_s']:>10.2f} s{prediction[name]['ratio']:>11.2f}")
    targets = report["targets"]
    lines += ["", f"targets (GPU): training step <= {targets['training_step_time']}x, peak memory <= "
                  f"{targets['training_peak_memory']}x, prediction <= {targets['prediction_time']}x"]
    return "\n".join(lines)


def write_report(report: dict, path: str) -> None:
    """Write the report as JSON, atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(report, f, indent=2)
    os.replace(f.name, path)
