"""Shared helpers: small synthetic datasets and running the stock nnU-Net commands."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from filelock import FileLock

from nnunet_dsmm.benchmark.batches import batch_for, synthetic_batches
from nnunet_dsmm.benchmark.plans import SYNTHETIC_CONFIGURATION, synthetic_plans
from nnunet_dsmm.benchmark.runner import preprocessed_placeholder, random_stage_checkpoints, trainer_class
from nnunet_dsmm.benchmark.runtime import temporary_environment
from nnunet_dsmm.data.brats import brats_dataset_json
from nnunet_dsmm.data.raw_writer import MANIFEST_FILE
from nnunet_dsmm.data.synth import SynthConfig, write_synthetic_dataset
from nnunet_dsmm.trainers.schedules import CPU_THREADS_VARIABLE

BIN = Path(sys.executable).parent
#: a schedule that trains every stage for one epoch of two iterations without nnU-Net's final validation
#: (learns nothing; for the command paths: the end-to-end tests' SMOKE schedule validates)
TINY_SCHEDULE = {"DSMM_NUM_EPOCHS": "1", "DSMM_NUM_ITERATIONS_PER_EPOCH": "2", "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH": "1",
                 "DSMM_TEXT_ENCODER": "untrained", "DSMM_FINAL_VALIDATION": "0"}


#: the files of the longest trainings, longest first: with pytest-xdist (a file stays on one worker) they start
#: on different workers at once, so that no worker starts one of them when the others are almost done
LONGEST_FIRST = ("tests/experiments/test_ablate.py", "tests/experiments/test_demo.py", "tests/test_end_to_end.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``LONGEST_FIRST``, then the other slow tests (each file in its own order): pytest-xdist hands out files in
    this order, so the long trainings start at once and the quick tests fill the workers at the end."""
    def order(item: pytest.Item) -> tuple[int, int]:
        path = item.path.relative_to(item.config.rootpath).as_posix()
        rank = LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
        return item.get_closest_marker("slow") is None, rank

    items.sort(key=order)


def session_folder(tmp_path_factory, name: str) -> Path:
    """A folder that every process of the test session shares: the run's base temporary folder, or, with
    pytest-xdist, the folder above the workers' own ones."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per test session, whichever worker asks first; the others wait for it and
    get the same folder. A build that fails leaves no folder behind, so the next one tries again."""
    folder = session_folder(tmp_path_factory, name)
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                build(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """A cache folder of the session's own (``XDG_CACHE_HOME``, inherited by every command the tests start):
    the untrained text tower's prompt embeddings are computed once per session, never read from the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(session_folder(tmp_path_factory, "cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def cores_shared_by_the_workers():
    """With pytest-xdist, each worker and every command it starts gets its share of the cores (as
    ``--jobs N`` shares them between trainings): without it each of N workers runs torch on every core."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        yield
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", CPU_THREADS_VARIABLE):
            patch.setenv(variable, threads)
        previous = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        yield
        torch.set_num_threads(previous)


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


def run_cli(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """``run_cmd`` for ``["nnunet_dsmm", ...]`` through the console script's ``main`` in this process, in
    ``env``: the same exit status and output without an interpreter start that imports torch and nnU-Net
    again. Only for what reads its environment when the command runs (nnU-Net's folders, our variables);
    Hugging Face's cache folder, for example, is read once at import."""
    from nnunet_dsmm.cli.main import main

    assert args[0] == "nnunet_dsmm", args
    saved = dict(os.environ)
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(args[1:])
    except SystemExit as usage_exit:  # argparse's usage errors and --help, as the console script exits
        status = usage_exit.code if isinstance(usage_exit.code, int) else int(usage_exit.code is not None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    result = subprocess.CompletedProcess(args, status, stdout.getvalue(), stderr.getvalue())
    if check and status != 0:
        raise AssertionError(f"{' '.join(args)} failed ({status}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
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


def plan_and_preprocess(root: Path, dataset_id: int) -> None:
    """The stock ``nnUNetv2_plan_and_preprocess`` with our fingerprint extractor and planner."""
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-fpe", "DSMMFingerprintExtractor",
             "-pl", "DSMMPlanner", "-c", "3d_fullres", "-np", "2", "-npfp", "2", "--no_pbar"], nnunet_env(root))


def plan_dataset(root: Path, dataset_id: int, **config) -> Path:
    """``make_dataset`` under ``root``, planned and preprocessed; returns ``root``."""
    make_dataset(root, dataset_id, **config)
    plan_and_preprocess(root, dataset_id)
    return root


#: the tiny dataset of the training commands' tests (train, the local executor, SLURM): planned once per
#: session, every test trains into a results folder of its own
TINY_ID = 960
TINY_NAME = f"Dataset{TINY_ID}_Synth"
#: the dataset of the end-to-end and folds tests: absent and all-zero channels, two test cases
SYNTH_ID = 901


@pytest.fixture(scope="session")
def tiny_planned(tmp_path_factory) -> Path:
    """5 training cases of 24^3 and no test case, planned and preprocessed; returns the root of its
    nnU-Net folders (its ``results`` folder stays unused)."""
    return built_once(tmp_path_factory, "tiny", lambda root: plan_dataset(root, TINY_ID, num_train=5, num_test=0,
                                                                         shape=(24, 24, 24)))


@pytest.fixture(scope="session")
def synth_planned(tmp_path_factory) -> tuple[Path, Path, dict]:
    """6 training cases with absent and all-zero channels and 2 test cases (32^3), planned and preprocessed
    with the stock command and our planner; returns the root of its nnU-Net folders, the raw dataset
    folder and its manifest."""
    def build(root: Path) -> None:
        _, manifest = make_dataset(root, SYNTH_ID, num_train=6, num_test=2, fm_ratio=0.0, missing_as="mixed")
        kinds = {how for case in manifest["written_as"].values() for how in case.values()}
        assert kinds == {"absent", "zero"}, kinds  # both kinds of "missing" occur
        plan_and_preprocess(root, SYNTH_ID)

    root = built_once(tmp_path_factory, "synth", build)
    folder = root / "raw" / f"Dataset{SYNTH_ID:03d}_Synth"
    return root, folder, json.loads((folder / MANIFEST_FILE).read_text())


#: the end-to-end schedule: every stage 2 epochs of 3 iterations (learns nothing), an untrained text tower
SMOKE = {"DSMM_NUM_EPOCHS": "2", "DSMM_NUM_ITERATIONS_PER_EPOCH": "3", "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH": "2",
         "DSMM_TEXT_ENCODER": "untrained"}


@pytest.fixture(scope="module")
def planned(synth_planned, tmp_path_factory) -> tuple[Path, Path, dict, dict[str, str]]:
    """The session's planned dataset (``synth_planned``) with a results folder of the test module's own:
    its root, raw folder, manifest and the environment of the commands (``SMOKE`` schedule)."""
    root, folder, manifest = synth_planned
    env = {**nnunet_env(root, **SMOKE), "nnUNet_results": str(tmp_path_factory.mktemp("results"))}
    return root, folder, manifest, env


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


#: the available channels of two samples, each missing some
MISSING = [[True, False, True, True], [False, True, False, False]]


def missing_batch(trainer, available=MISSING) -> dict:
    """A loader-like batch of the trainer's batch size whose samples have the given channels."""
    rows = [available[i % len(available)] for i in range(trainer.batch_size)]
    raw = synthetic_batches(trainer, 1, len(rows), 1.0, torch.Generator().manual_seed(0))[0]
    raw["available"] = torch.tensor(rows)
    raw["data"] = raw["data"] * raw["available"][:, :, None, None, None]
    return batch_for(trainer, raw)
