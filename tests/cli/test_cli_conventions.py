"""nnU-Net's conventions and the error paths of every ``nnunet_dsmm`` command, through the console script."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import BIN, make_dataset, run_cli, run_cmd

NETWORK_COMMANDS = ("train", "evaluate", "recover", "demo", "ablate", "benchmark")


def bare_env(**extra: str) -> dict[str, str]:
    """The environment without nnU-Net's folders, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    return {**env, **extra}


def assert_user_error(result, *texts: str) -> None:
    """Exit 2, every text in the message, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for text in texts:
        assert text in result.stderr, result.stderr


def test_version_comes_from_the_installed_package():
    result = run_cmd(["nnunet_dsmm", "--version"], bare_env())
    assert result.stdout.strip() == (f"nnunet-dsmm {metadata.version('nnunet-dsmm')} "
                                     f"(nnunetv2 {metadata.version('nnunetv2')})")


def test_every_network_command_takes_nnunets_device_option_and_placeholders():
    for command in NETWORK_COMMANDS:
        text = run_cmd(["nnunet_dsmm", command, "--help"], bare_env()).stdout
        assert "-device {cuda,cpu,mps}, --device {cuda,cpu,mps}" in text, command
        assert "(default cuda)" in text, command
    evaluate = run_cmd(["nnunet_dsmm", "evaluate", "--help"], bare_env()).stdout
    for placeholder in ("-d DATASET", "-c CONFIGURATION", "-tr TRAINER", "-i INPUT_FOLDER", "-o OUTPUT_FOLDER",
                        "-chk CHECKPOINT", "--disable_tta"):
        assert placeholder in evaluate, placeholder
    train = run_cmd(["nnunet_dsmm", "train", "--help"], bare_env()).stdout
    assert "-d DATASET -c CONFIGURATION -f FOLD" in train and "[-tr TRAINER] [-p PLANS]" in train
    for command in ("check", "synth", "convert-brats", "status", *NETWORK_COMMANDS):
        text = run_cmd(["nnunet_dsmm", command, "--help"], bare_env()).stdout
        assert " -d D " not in text and " -i I " not in text and " -o O " not in text, command


def test_chk_names_the_checkpoint_and_abbreviations_are_refused(tmp_path):
    (tmp_path / "results" / "Dataset954_X").mkdir(parents=True)
    env = bare_env(nnUNet_results=str(tmp_path / "results"))
    result = run_cmd(["nnunet_dsmm", "recover", "-d", "954", "-c", "3d_fullres", "-i", str(tmp_path), "-o",
                      str(tmp_path / "out"), "-chk", "checkpoint_best.pth", "-device", "cpu"], env, check=False)
    # before, -chk was read as -c hk
    assert_user_error(result, "DSMMTrainer__DSMMPlans__3d_fullres")
    assert "__hk" not in result.stderr
    abbreviated = run_cmd(["nnunet_dsmm", "synth", "-o", str(tmp_path / "s"), "--num-t", "3"], env, check=False)
    assert_user_error(abbreviated, "unrecognized arguments: --num-t 3")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("spelling", ["--disable_tta", "--disable-tta"])
def test_disable_tta_as_nnunet_spells_it_and_the_old_alias(tmp_path, spelling):
    (tmp_path / "results" / "Dataset955_X").mkdir(parents=True)
    result = run_cmd(["nnunet_dsmm", "ablate", "-d", "955", "-c", "3d_fullres", "-i", "x", "-l", "y", "-o",
                      str(tmp_path / "out"), "--table", "fig5", "--budget", "smoke", "--device", "cpu", spelling,
                      "--dry-run"], bare_env(nnUNet_results=str(tmp_path / "results")))
    assert "would train" in result.stdout and "nothing trained" in result.stdout


@pytest.mark.parametrize("args, text", [
    (["synth", "-o", "OUT", "--fm-ratio", "2"], "argument --fm-ratio: must be from 0.0 to 1.0, got 2"),
    (["synth", "-o", "OUT", "--num-train", "0"], "argument --num-train: must be at least 1, got 0"),
    (["synth", "-o", "OUT", "--num-train", "many"], "argument --num-train: expected an integer, got 'many'"),
    (["demo", "-o", "OUT", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
    (["ablate", "-d", "1", "-c", "3d", "-i", "x", "-l", "y", "-o", "OUT", "--seeds", "0"],
     "argument --seeds: must be at least 1, got 0"),
    (["benchmark", "--synthetic-plan", "cpu-small", "--complete-share", "-0.5"], "argument --complete-share"),
    (["train", "-d", "1", "-c", "3d_fullres", "-f", "first"], "argument -f: a fold is an integer or 'all'"),
])
def test_out_of_range_options_are_usage_errors(tmp_path, args, text):
    result = run_cmd(["nnunet_dsmm", *[str(tmp_path / "out") if a == "OUT" else a for a in args]], bare_env(),
                     check=False)
    assert_user_error(result, text)
    assert not (tmp_path / "out").exists()


def test_an_unknown_trainer_gets_the_closest_registered_name():
    result = run_cmd(["nnunet_dsmm", "train", "-d", "1", "-c", "3d_fullres", "-f", "0", "-tr", "DSMMTrainr"],
                     bare_env(), check=False)
    assert_user_error(result, "DSMMTrainr is not a registered DSMM trainer; did you mean DSMMTrainer?")


@pytest.mark.parametrize("args, variable", [
    (["status", "-d", "1"], "nnUNet_results"),
    (["train", "-d", "1", "-c", "3d_fullres", "-f", "0"], "nnUNet_results"),
    (["evaluate", "-d", "1", "-c", "3d_fullres", "-tr", "DSMMTrainer", "-i", "x", "-l", "y", "-o", "z"],
     "nnUNet_results"),
    (["check", "-d", "1"], "nnUNet_raw"),
])
def test_an_unset_nnunet_folder_is_named(args, variable):
    result = run_cmd(["nnunet_dsmm", *args], bare_env(), check=False)
    assert_user_error(result, f"the environment variable {variable} is not set", f"export {variable}=")


def test_train_needs_nnunet_preprocessed_and_the_plans(tmp_path):
    (tmp_path / "results" / "Dataset956_X").mkdir(parents=True)
    env = bare_env(nnUNet_results=str(tmp_path / "results"))
    command = ["nnunet_dsmm", "train", "-d", "956", "-c", "3d_fullres", "-f", "0", "--dry-run"]
    assert_user_error(run_cli(command, env, check=False), "nnUNet_preprocessed is not set")
    (tmp_path / "pre" / "Dataset956_X").mkdir(parents=True)
    result = run_cli(command, {**env, "nnUNet_preprocessed": str(tmp_path / "pre")}, check=False)
    assert_user_error(result, "DSMMPlans.json; plan and preprocess the dataset first: nnUNetv2_plan_and_preprocess "
                              "-d 956 -fpe DSMMFingerprintExtractor -pl DSMMPlanner -c 3d_fullres")


def test_a_closed_pipe_ends_quietly(tmp_path):
    folder, _ = make_dataset(tmp_path, 957, num_train=2, num_test=0, shape=(24, 24, 24))
    command = [str(BIN / "nnunet_dsmm"), "check", "--raw", str(folder), "--json", "--no-progress"]
    env = bare_env(DSMM_TEXT_ENCODER="untrained")  # no warning about CLIP weights on stderr
    piped = subprocess.run(" ".join(command) + " | head -1", shell=True, capture_output=True, text=True,
                           executable="/bin/bash", env=env)
    assert piped.stdout == "{\n" and piped.stderr == "", piped.stderr
    # the reader is gone before anything is written: deterministic
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait() == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def write_training(results: Path, dataset: str, checkpoint: bytes | None, schedule: str) -> Path:
    """A fold folder with ``checkpoint`` (if any) as its checkpoint_latest.pth and ``schedule`` as its
    schedule file."""
    fold = results / dataset / "DSMMTeacherTrainer__DSMMPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    if checkpoint is not None:
        (fold / "checkpoint_latest.pth").write_bytes(checkpoint)
    (fold / "dsmm_schedule.json").write_text(schedule)
    return fold


SCHEDULE = json.dumps({"num_epochs": 3, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1})


def test_a_checkpoint_cut_short_is_named_with_what_to_do(tmp_path):
    import torch

    torch.save({"current_epoch": 2, "network_weights": {"w": torch.zeros(1000)}}, tmp_path / "whole.pth")
    fold = write_training(tmp_path / "results", "Dataset957_X", (tmp_path / "whole.pth").read_bytes()[:600],
                          SCHEDULE)
    result = run_cmd(["nnunet_dsmm", "status", "-d", "957"], bare_env(nnUNet_results=str(tmp_path / "results")),
                     check=False)
    assert_user_error(result, f"{fold / 'checkpoint_latest.pth'} is not a readable nnU-Net checkpoint",
                      "Delete it and run the command again")


def test_an_internal_error_is_one_line_with_exit_3_and_its_traceback_behind_debug(tmp_path):
    write_training(tmp_path / "results", "Dataset958_X", None, "{ our own schedule file, but not JSON")
    env = bare_env(nnUNet_results=str(tmp_path / "results"))
    result = run_cmd(["nnunet_dsmm", "status", "-d", "958"], env, check=False)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("nnunet-dsmm: internal error (")
    assert "please report it with the output of --debug: nnunet_dsmm --debug status -d 958" in result.stderr
    for debug in (["--debug", "status", "-d", "958"], ["status", "-d", "958", "--debug"]):
        shown = run_cmd(["nnunet_dsmm", *debug], env, check=False)
        assert shown.returncode == 3 and "Traceback (most recent call last)" in shown.stderr, debug


def test_status_without_trainings(tmp_path):
    (tmp_path / "results" / "Dataset959_X").mkdir(parents=True)
    result = run_cmd(["nnunet_dsmm", "status", "-d", "959"], bare_env(nnUNet_results=str(tmp_path / "results")))
    assert result.stdout.strip() == f"No trained model in {tmp_path / 'results' / 'Dataset959_X'}."


def test_demo_refuses_a_folder_that_is_not_a_demo_run_or_has_other_settings(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = run_cmd(["nnunet_dsmm", "demo", "-o", str(tmp_path / "mine"), "--budget", "smoke"], bare_env(),
                     check=False)
    assert_user_error(result, "is not empty and holds no demo run", "choose a new output folder")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "demo_state.json").write_text(json.dumps({"settings": {
        "budget": "cpu", "fm_ratio": 0.1, "seed": 0, "labels": "regions"}, "done": ["synthesise"]}))
    result = run_cmd(["nnunet_dsmm", "demo", "-o", str(tmp_path / "other"), "--budget", "smoke"], bare_env(),
                     check=False)
    assert_user_error(result, "holds a demo run with other settings", "'budget': 'cpu'")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_the_demo_on_nnunets_default_device_without_a_gpu_says_how_to_run_it_on_the_cpu(tmp_path):
    result = run_cmd(["nnunet_dsmm", "demo", "-o", str(tmp_path / "demo"), "--budget", "smoke"], bare_env(),
                     check=False)
    assert_user_error(result, "no CUDA device is available", "nnunet_dsmm demo -device cpu")
    assert not (tmp_path / "demo").exists()


def help_text(*command: str) -> str:
    """``nnunet_dsmm COMMAND --help`` on one line (argparse wraps its lines)."""
    return " ".join(run_cmd(["nnunet_dsmm", *command, "--help"], bare_env()).stdout.split())


def test_one_spelling_and_one_default_per_concept():
    budgets = "paper (1000/600/1000 epochs), gpu (100/50/100), cpu (16/6/16 epochs of 12 iterations)"
    assert budgets in help_text("train") and budgets in help_text("ablate")
    for command in ("evaluate", "recover", "ablate"):
        assert "(default 0" in help_text(command), command
    for command in ("synth", "convert-brats", "demo"):
        text = help_text(command)
        assert "--data-seed DATA_SEED" in text and "--seed " not in text, command
    assert "--seeds SEEDS" in help_text("demo") and "--seeds SEEDS" in help_text("ablate")
    demo = help_text("demo")
    assert "(default: cpu with -device cpu, else gpu)" in demo and "about 15 minutes on 2 cores" in demo
    assert "about 15 minutes with -device cpu" in help_text() and "~10 min" not in demo
    assert "(default: no simulation, every modality kept)" in help_text("convert-brats")
    assert "(default 0.1)" in help_text("synth")


def planned_folders(tmp_path, dataset: str) -> dict[str, str]:
    """nnU-Net folders holding an (empty) plan of ``dataset``, enough for ``train --dry-run``."""
    (tmp_path / "results" / dataset).mkdir(parents=True)
    (tmp_path / "pre" / dataset).mkdir(parents=True)
    (tmp_path / "pre" / dataset / "DSMMPlans.json").write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    return {"nnUNet_results": str(tmp_path / "results"), "nnUNet_preprocessed": str(tmp_path / "pre")}


def test_train_takes_a_budget_as_ablate_does(tmp_path):
    env = bare_env(**planned_folders(tmp_path, "Dataset961_X"), DSMM_TEXT_ENCODER="untrained")
    command = ["nnunet_dsmm", "train", "-d", "961", "-c", "3d_fullres", "-f", "0", "-device", "cpu", "--dry-run"]
    smoke = run_cli([*command, "--budget", "smoke"], env).stdout
    assert "schedule: --budget smoke" in smoke
    assert "DSMMTeacherTrainer: would train 2 epochs" in smoke and "DSMMPretrainTrainer: would train 1 epochs" in smoke
    assert "5 epochs (15 training iterations)" in smoke
    paper = run_cli(command, env).stdout
    assert "DSMMTrainer: would train 1000 epochs" in paper and "(650000 training iterations)" in paper


@pytest.mark.parametrize("device, budget", [("cpu", "cpu"), ("cuda", "gpu")])
def test_the_demo_budget_follows_the_device(tmp_path, device, budget):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "demo_state.json").write_text(json.dumps({"settings": {
        "budget": "smoke", "fm_ratio": 0.1, "seed": 0, "labels": "regions"}, "done": ["synthesise"]}))
    result = run_cmd(["nnunet_dsmm", "demo", "-o", str(tmp_path / "other"), "-device", device], bare_env(),
                     check=False)
    assert_user_error(result, f"asked {{'budget': '{budget}'")


def test_train_warns_when_the_clip_weights_would_be_downloaded(tmp_path):
    env = bare_env(**planned_folders(tmp_path, "Dataset962_X"), HF_HOME=str(tmp_path / "empty_cache"),
                   HF_HUB_OFFLINE="1")
    env = {k: v for k, v in env.items() if k not in ("DSMM_TEXT_ENCODER", "DSMM_CLIP_PRETRAINED")}
    command = ["nnunet_dsmm", "train", "-d", "962", "-c", "3d_fullres", "-f", "0", "-device", "cpu", "--dry-run"]
    offline = run_cmd(command, env)
    assert "the CLIP weights of ViT-B-32 ('openai') are not downloaded on this machine" in offline.stderr
    assert "DSMM_CLIP_PRETRAINED=/path/to/open_clip_pytorch_model.bin" in offline.stderr
    assert "DSMM_TEXT_ENCODER=untrained" in offline.stderr and "would train" in offline.stdout
    # the cases that do not look into Hugging Face's cache (read at import) run in this process
    wrong = run_cli(command, {**env, "DSMM_CLIP_PRETRAINED": str(tmp_path / "absent.bin")})
    assert f"DSMM_CLIP_PRETRAINED={tmp_path / 'absent.bin'} is neither a file" in wrong.stderr
    (tmp_path / "clip.bin").write_bytes(b"weights")
    for chosen in ({"DSMM_CLIP_PRETRAINED": str(tmp_path / "clip.bin")}, {"DSMM_TEXT_ENCODER": "untrained"}):
        assert "WARNING" not in run_cli(command, {**env, **chosen}).stderr, chosen
    # a trainer without text prompts needs no weights
    baseline = run_cli([*command, "-tr", "DSMMBaselineTrainer"], env)
    assert "WARNING" not in baseline.stderr


def test_check_warns_as_train_does_when_the_clip_weights_would_be_downloaded(tmp_path):
    folder, _ = make_dataset(tmp_path, 963, num_train=2, num_test=0, shape=(24, 24, 24))
    env = {k: v for k, v in bare_env(HF_HOME=str(tmp_path / "empty_cache"), HF_HUB_OFFLINE="1").items()
           if k not in ("DSMM_TEXT_ENCODER", "DSMM_CLIP_PRETRAINED")}
    command = ["nnunet_dsmm", "check", "--raw", str(folder), "--no-progress"]
    offline = run_cmd(command, env)
    assert "the CLIP weights of ViT-B-32 ('openai') are not downloaded on this machine" in offline.stderr
    assert "WARNING" not in run_cmd(command, {**env, "DSMM_TEXT_ENCODER": "untrained"}).stderr
