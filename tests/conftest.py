"""Shared helpers: small synthetic datasets and running the stock nnU-Net commands."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_dsmm.benchmark.plans import SYNTHETIC_CONFIGURATION, synthetic_plans
from nnunet_dsmm.benchmark.runner import preprocessed_placeholder, random_stage_checkpoints, trainer_class
from nnunet_dsmm.benchmark.runtime import temporary_environment
from nnunet_dsmm.data.brats import brats_dataset_json
from nnunet_dsmm.data.synth import SynthConfig, write_synthetic_dataset

BIN = Path(sys.executable).parent
#: a schedule that trains every stage for one epoch of two iterations (learns nothing; for the command paths)
TINY_SCHEDULE = {"DSMM_NUM_EPOCHS": "1", "DSMM_NUM_ITERATIONS_PER_EPOCH": "2", "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH": "1",
                 "DSMM_TEXT_ENCODER": "untrained"}


def nnunet_env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1",
               **extra)
    return env


def run_cmd(args: list[str], env: dict[str, str], check: bool = True, timeout: int = 900):
    """Run a console script of this environment (e.g. ``nnUNetv2_train``) as a subprocess."""
    result = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return result


def run_until(args: list[str], env: dict[str, str], stop: Callable[[str], bool], timeout: int = 900) -> str:
    """Run a console script and kill it, with every process it started, at the first output line
    for which ``stop`` is true: an interrupted run. Returns the output up to that line."""
    process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env={**env, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if stop(line):
                return "".join(output)
        raise AssertionError(f"{' '.join(args)} ended before the line to stop at:\n{''.join(output)[-5000:]}")
    finally:
        watchdog.cancel()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def make_dataset(root: Path, dataset_id: int, **config) -> tuple[Path, dict]:
    """A synthetic dataset ``Dataset<ID>_Synth`` under ``root/raw``; returns its folder and manifest."""
    folder = root / "raw" / f"Dataset{dataset_id:03d}_Synth"
    defaults = dict(shape=(32, 32, 32), num_train=6, num_test=2, fm_ratio=0.0, seed=dataset_id,
                    missing_as="mixed")
    defaults.update(config)
    manifest = write_synthetic_dataset(str(folder), SynthConfig(**defaults))
    return folder, manifest


def plan_dataset(root: Path, dataset_id: int, **config) -> Path:
    """``make_dataset`` under ``root``, planned and preprocessed with the stock command and our planner;
    returns ``root``."""
    make_dataset(root, dataset_id, **config)
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-fpe", "DSMMFingerprintExtractor",
             "-pl", "DSMMPlanner", "-c", "3d_fullres", "-np", "2", "-npfp", "2", "--no_pbar"], nnunet_env(root))
    return root


@pytest.fixture
def tmp_root(tmp_path: Path) -> Path:
    return tmp_path


def small_unet(inputs: int, outputs: int, deep_supervision: bool = False) -> PlainConvUNet:
    """A 3-stage, 4-to-16-feature U-Net of the kind nnU-Net plans, small enough for unit tests."""
    return PlainConvUNet(inputs, 3, (4, 8, 16), torch.nn.Conv3d, 3, (1, 2, 2), 1, outputs, 1,
                         norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                         nonlin=torch.nn.LeakyReLU, deep_supervision=deep_supervision)


def tiny_plans(labels: str = "regions") -> tuple[dict, dict]:
    """The benchmark's CPU plan, shrunk: 3 stages of 8-32 features, 16^3 patch, batch 2 (1 per rank);
    BraTS regions or (``labels="plain"``) three plain classes."""
    plans, dataset_json = synthetic_plans("cpu-small")
    dataset_json = brats_dataset_json(dataset_json["numTraining"], dataset_json["name"], labels)
    config = plans["configurations"][SYNTHETIC_CONFIGURATION]
    config["patch_size"] = [16, 16, 16]
    config["batch_size"] = 2
    config["architecture"]["arch_kwargs"].update(
        n_stages=3, features_per_stage=[8, 16, 32], kernel_sizes=[[3, 3, 3]] * 3,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1] * 3, n_conv_per_stage_decoder=[1] * 2)
    return plans, dataset_json


def build_trainer(name: str, root: Path, labels: str = "regions"):
    """A registered trainer built and initialised as nnUNetv2_train does it (under DDP when a process
    group exists), on CPU, for ``tiny_plans(labels)``; earlier stages are random checkpoints."""
    plans, dataset_json = tiny_plans(labels)
    cls = trainer_class(name)
    root.mkdir(parents=True, exist_ok=True)
    placeholder = preprocessed_placeholder(plans, SYNTHETIC_CONFIGURATION, 4, str(root / "preprocessed"))
    with temporary_environment(nnUNet_results=str(root / "results"), nnUNet_preprocessed=placeholder,
                               DSMM_TEXT_ENCODER="untrained", **random_stage_checkpoints(
                                   cls, plans, SYNTHETIC_CONFIGURATION, dataset_json, str(root))):
        trainer = cls({**copy.deepcopy(plans), "continue_training": False}, SYNTHETIC_CONFIGURATION, 0,
                      dataset_json, torch.device("cpu"))
        trainer.device = torch.device("cpu")  # nnU-Net sets cuda:<rank> under DDP
        trainer.initialize()
    trainer.network.train()
    return trainer
