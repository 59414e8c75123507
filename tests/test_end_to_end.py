"""The stock nnU-Net commands on the session's small synthetic dataset with absent and all-zero channels:
the three stages, their logs and checkpoints, the variants, prediction, evaluation and recovery."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.conftest import SYNTH_ID, run_cmd, run_until

DATASET_ID = SYNTH_ID


def train_command(trainer: str, fold: int = 0, *extra: str) -> list[str]:
    return ["nnUNetv2_train", str(DATASET_ID), "3d_fullres", str(fold), "-p", "DSMMPlans", "-tr", trainer,
            "-device", "cpu", *extra]


def train(env, trainer: str, fold: int = 0, *extra: str) -> Path:
    run_cmd(train_command(trainer, fold, *extra), env)
    return Path(env["nnUNet_results"]) / f"Dataset{DATASET_ID}_Synth" / f"{trainer}__DSMMPlans__3d_fullres"


def predict_absent_t1ce(env, folder, manifest, trainer: str, tmp_path: Path) -> tuple[str, Path]:
    case = manifest["test_cases"][0]
    inputs = tmp_path / f"inputs_{trainer}"
    inputs.mkdir()
    for c in (0, 1, 3):  # T1ce (_0002) is absent
        (inputs / f"{case}_{c:04d}.nii.gz").symlink_to(folder / "imagesTs" / f"{case}_{c:04d}.nii.gz")
    out = tmp_path / f"out_{trainer}"
    env = {k: v for k, v in env.items() if k != "DSMM_TEXT_ENCODER"}  # prediction needs no text encoder
    run_cmd(["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", str(DATASET_ID), "-c", "3d_fullres",
             "-p", "DSMMPlans", "-tr", trainer, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    return case, out / f"{case}.nii.gz"


def assert_valid_prediction(path: Path, reference_path: Path) -> None:
    prediction, reference = sitk.ReadImage(str(path)), sitk.ReadImage(str(reference_path))
    assert prediction.GetSize() == reference.GetSize()
    assert np.allclose(prediction.GetSpacing(), reference.GetSpacing())
    assert np.allclose(prediction.GetOrigin(), reference.GetOrigin())
    assert np.allclose(prediction.GetDirection(), reference.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(prediction)).tolist()) <= {0, 1, 2, 3}


@pytest.fixture(scope="module")
def staged(planned, tmp_path_factory):
    """Stage 1 (checked by predicting a case with an absent channel file), then stage 2."""
    root, folder, manifest, env = planned
    reference = folder / "imagesTs" / f"{manifest['test_cases'][0]}_0000.nii.gz"
    teacher = train(env, "DSMMTeacherTrainer")
    assert (teacher / "fold_0" / "checkpoint_final.pth").is_file() and (teacher / "fold_0" / "progress.png").is_file()
    assert (teacher / "fold_0" / "validation" / "summary.json").is_file()  # nnU-Net's final validation, by default
    assert_valid_prediction(predict_absent_t1ce(env, folder, manifest, "DSMMTeacherTrainer",
                                                tmp_path_factory.mktemp("predict"))[1], reference)
    pretrain = train(env, "DSMMPretrainTrainer")  # finds stage 1 by convention
    assert (pretrain / "fold_0" / "checkpoint_final.pth").is_file()
    return teacher, pretrain


@pytest.fixture(scope="module")
def dsmm_trained(planned, staged):
    """Stage 3, interrupted once its first epoch is saved, then continued with --c to the end of its schedule."""
    _, _, _, env = planned
    run_until(train_command("DSMMTrainer"), env, lambda line: line.rstrip().endswith("Epoch 1"))
    fold = Path(env["nnUNet_results"]) / f"Dataset{DATASET_ID}_Synth" / "DSMMTrainer__DSMMPlans__3d_fullres" / "fold_0"
    interrupted = torch.load(fold / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    assert not (fold / "checkpoint_final.pth").exists() and interrupted["current_epoch"] == 1
    return train(env, "DSMMTrainer", 0, "--c")


@pytest.mark.slow
def test_three_stages_with_the_stock_commands_then_predict_absent_channels(planned, staged, dsmm_trained, tmp_path):
    root, folder, manifest, env = planned
    reference = folder / "imagesTs" / f"{manifest['test_cases'][0]}_0000.nii.gz"
    teacher, pretrain = staged
    dsmm = dsmm_trained
    log = training_log(dsmm)
    assert "UNTRAINED" in log and "NO language prior" in log

    checkpoint = torch.load(dsmm / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2
    keys = checkpoint["network_weights"].keys()
    assert any(k.startswith("recovery.") for k in keys) and "student.prompt_embeddings" in keys
    phi = torch.load(pretrain / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    refined = [k for k, v in phi["network_weights"].items()
               if not torch.equal(checkpoint["network_weights"][f"recovery.{k}"], v)]
    assert refined, "M_rec must be refined during complete-then-distill"

    # a checkpoint built by build_network_architecture loads strictly in a fresh process
    code = (
        "import torch, json, sys\n"
        "from nnunetv2.utilities.plans_handling.plans_handler import PlansManager\n"
        "from nnunetv2.utilities.find_class_by_name import recursive_find_python_class\n"
        f"ckpt = torch.load({str(dsmm / 'fold_0' / 'checkpoint_final.pth')!r}, map_location='cpu', "
        "weights_only=False)\n"
        f"pm = PlansManager({str(dsmm / 'plans.json')!r})\n"
        "cm = pm.get_configuration('3d_fullres')\n"
        "cls = recursive_find_python_class('x', 'DSMMTrainer', None)\n"
        "net = cls.build_network_architecture(pm, cm, 4, 3, enable_deep_supervision=False)\n"
        "net.load_state_dict(ckpt['network_weights'], strict=True)\n"
        "unused = len(list(net.recovery.decoder.seg_layers[:-1].parameters()))\n"
        "print('loaded', len(list(net.parameters())) - unused, len(ckpt['optimizer_state']['state']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.startswith("loaded"), result.stderr[-3000:]
    _, parameters, optimised = result.stdout.split()
    assert parameters == optimised, "every parameter (student, hypernetwork, M_rec) has optimiser state"

    assert_valid_prediction(predict_absent_t1ce(env, folder, manifest, "DSMMTrainer", tmp_path)[1], reference)


def training_log(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted((folder / "fold_0").glob("training_log_*.txt")))


@pytest.mark.slow
def test_each_stage_logs_its_loss_terms_per_epoch(staged, dsmm_trained):
    teacher, pretrain = staged
    for folder, terms in ((teacher, ["seg"]), (pretrain, ["eq1", "da"]), (dsmm_trained, ["task", "mrec", "kd"])):
        log = training_log(folder)
        assert f"loss terms logged per epoch: {terms[0]} = " in log, folder.name
        lines = [line for line in log.splitlines() if "loss terms: " in line]
        assert len(lines) == 2, folder.name  # one per epoch (stage 3: one before, one after the interruption)
        assert all(f" {term} " in line for line in lines for term in terms), lines
        logging = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                             weights_only=False)["logging"]
        for term in terms:
            values = logging[f"train_loss_{term}"]
            assert len(values) == len(logging["train_losses"]) == 2 and np.isfinite(values).all(), (folder, term)
        total = np.array(logging["train_losses"])
        if terms == ["seg"]:
            assert np.allclose(total, logging["train_loss_seg"], rtol=1e-5)


@pytest.mark.slow
def test_the_schedule_is_recorded_and_continuing_under_another_is_refused(planned, dsmm_trained):
    _, _, _, env = planned
    fold = dsmm_trained / "fold_0"
    schedule = {"num_epochs": 2, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 2}
    assert json.loads((fold / "dsmm_schedule.json").read_text()) == schedule
    assert "'num_epochs': 2" in json.loads((fold / "debug.json").read_text())["dsmm_schedule"]
    assert f"nnunet-dsmm: schedule {schedule}" in training_log(dsmm_trained)
    before = (fold / "checkpoint_final.pth").stat().st_mtime_ns
    result = run_cmd(train_command("DSMMTrainer", 0, "--c"), {**env, "DSMM_NUM_EPOCHS": "5"}, check=False)
    assert result.returncode != 0
    assert "nnunet-dsmm:" in result.stderr and "'num_epochs': 2" in result.stderr and "'num_epochs': 5" in result.stderr
    assert "DSMM_NUM_EPOCHS" in result.stderr
    assert (fold / "checkpoint_final.pth").stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_missing_earlier_stage_prints_the_command_to_run_first(planned):
    _, _, _, env = planned
    result = run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "1", "-p", "DSMMPlans", "-tr",
                      "DSMMPretrainTrainer", "-device", "cpu"], env, check=False)
    assert result.returncode != 0
    assert f"nnUNetv2_train {DATASET_ID} 3d_fullres 1 -p DSMMPlans -tr DSMMTeacherTrainer" in result.stderr
    assert "fold_1/checkpoint_final.pth does not exist" in result.stderr
    best = run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "1", "-p", "DSMMPlans", "-tr",
                    "DSMMPretrainTrainer", "-device", "cpu"], {**env, "DSMM_STAGE_CHECKPOINT": "checkpoint_best.pth"},
                   check=False)
    assert best.returncode != 0 and "fold_1/checkpoint_best.pth does not exist" in best.stderr


@pytest.mark.slow
def test_later_stages_say_which_checkpoint_of_each_earlier_stage_they_loaded(staged, dsmm_trained):
    teacher, pretrain = staged
    log = training_log(dsmm_trained)
    for role, folder in (("teacher T", teacher), ("mask-reconstruction network", pretrain)):
        assert f"{role}" in log and f"loaded from {folder / 'fold_0' / 'checkpoint_final.pth'}" in log


#: the variants that no ablation table trains (tests/experiments/test_ablate.py trains every row of Tables 2 and 3,
#: Fig. 5, the baselines and the decisive table, their earlier stages included, with the stock nnUNetv2_train)
@pytest.mark.parametrize("trainer", ["DSMMTrainerDetachedKD", "DSMMTrainerDiceOnly", "DSMMTrainerLowMemory"])
@pytest.mark.slow
def test_ablation_and_variant_trainers_train_with_the_stock_command(planned, staged, trainer):
    from nnunet_dsmm.nnunet.discovery import find_registered_class

    _, _, _, env = planned
    # one epoch, no final validation (the stage chain above validates with the stock command)
    short = {**env, "DSMM_NUM_EPOCHS": "1", "DSMM_NUM_ITERATIONS_PER_EPOCH": "2", "DSMM_FINAL_VALIDATION": "0"}
    for stage in find_registered_class(trainer).earlier_stages().values():  # e.g. Table 3's plain teacher
        results = Path(planned[3]["nnUNet_results"]) / f"Dataset{DATASET_ID}_Synth"
        if not (results / f"{stage.__name__}__DSMMPlans__3d_fullres"
                / "fold_0" / "checkpoint_final.pth").is_file():
            train(short, stage.__name__)
    model = train(short, trainer)
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()


@pytest.mark.slow
def test_evaluate_every_combination_and_resume(planned, staged, dsmm_trained, tmp_path):
    _, folder, manifest, env = planned
    case = manifest["test_cases"][0]
    images = tmp_path / "images"
    images.mkdir()
    for c in range(4):
        (images / f"{case}_{c:04d}.nii.gz").symlink_to(folder / "imagesTs" / f"{case}_{c:04d}.nii.gz")
    out = tmp_path / "evaluation"
    command = ["nnunet_dsmm", "evaluate", "-d", str(DATASET_ID), "-c", "3d_fullres", "-p", "DSMMPlans",
               "-tr", "DSMMTeacherTrainer", "-tr", "DSMMTrainer", "-f", "0", "-i", str(images),
               "-l", str(folder / "labelsTs"), "-o", str(out), "-device", "cpu"]
    first = run_cmd(command, env)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * 15 * 3
    assert {"case", "combination", "region", "dsc", "hd95", "model"} <= set(rows[0])
    assert all(0 <= float(r["dsc"]) <= 1 and float(r["hd95"]) >= 0 for r in rows)
    predictions = sorted((out / "predictions").rglob("*.nii.gz"))
    assert len(predictions) == 30
    assert (out / "heatmap.png").stat().st_size > 0 and "| Avg. |" in (out / "summary.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == ["DSMMTeacherTrainer", "DSMMTrainer"] and "wilcoxon" in summary
    assert "Avg." in first.stdout

    stamps = {p: p.stat().st_mtime_ns for p in predictions}
    (out / "results.csv").unlink()
    run_cmd(command, env)
    assert {p: p.stat().st_mtime_ns for p in predictions} == stamps, "a re-run must reuse existing predictions"
    assert len(list(csv.DictReader((out / "results.csv").open()))) == len(rows)


@pytest.mark.slow
def test_batched_combinations_predict_what_nnunet_predicts_one_at_a_time(planned, dsmm_trained):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_dsmm.evaluation.prediction import predict_logits_of_combinations
    from nnunet_dsmm.model.modalities import all_combinations

    _, folder, manifest, _ = planned
    predictor = nnUNetPredictor(perform_everything_on_device=False, device=torch.device("cpu"), use_mirroring=True,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(dsmm_trained), use_folds=(0,))
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    config = predictor.configuration_manager
    case = manifest["test_cases"][0]
    files = sorted(str(p) for p in (folder / "imagesTs").glob(f"{case}_*.nii.gz"))
    data = config.preprocessor_class(verbose=False).run_case(files, None, predictor.plans_manager, config,
                                                             predictor.dataset_json)[0]
    # larger than a tile along the first axis, so that two overlapping tiles are blended (two, not eight:
    # every tile is predicted 8 times, mirrored, per combination and per way)
    data = np.pad(data, [(0, 0), (3, config.patch_size[0] // 2)] + [(0, 0)] * (len(config.patch_size) - 1))
    codes = np.array(all_combinations(4)[::7], dtype=np.float32)  # one, two and four channels
    volumes = torch.from_numpy(data[None] * codes[:, :, None, None, None])
    batched = predict_logits_of_combinations(predictor, volumes)
    for volume, logits in zip(volumes, batched):
        alone = predictor.predict_logits_from_preprocessed_data(volume)
        assert logits.shape == alone.shape and logits.dtype == alone.dtype
        # both accumulate tiles in float16 as nnU-Net does: a last-bit difference between a batched and a
        # single convolution can move a sum by one float16 step, at most ~0.5 % of the largest logit
        tolerance = 1e-2 * float(alone.float().abs().max())
        assert float((logits.float() - alone.float()).abs().max()) <= tolerance
        decided = alone.float().abs() > tolerance  # the region (sigmoid > 0.5) is not within that error
        assert decided.any() and torch.equal((logits > 0)[decided], (alone > 0)[decided])


@pytest.mark.slow
def test_recover_hidden_and_absent_channels_without_touching_the_inputs(planned, dsmm_trained, tmp_path):
    _, folder, manifest, env = planned
    case = manifest["test_cases"][0]
    images = tmp_path / "images"
    images.mkdir()
    for c in (0, 1, 3):  # T1ce absent
        (images / f"{case}_{c:04d}.nii.gz").write_bytes((folder / "imagesTs" / f"{case}_{c:04d}.nii.gz").read_bytes())
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    refused = run_cmd(["nnunet_dsmm", "recover", "-d", str(DATASET_ID), "-c", "3d_fullres", "-i", str(images),
                       "-o", str(images), "-device", "cpu"], env, check=False)
    assert refused.returncode != 0 and "never written next to the inputs" in refused.stderr

    out = tmp_path / "recovered"
    run_cmd(["nnunet_dsmm", "recover", "-d", str(DATASET_ID), "-c", "3d_fullres", "-i", str(images), "-o", str(out),
             "--hide", "T2", "-device", "cpu"], env)
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == [f"{case}_0002.nii.gz", f"{case}_0003.nii.gz"]  # absent T1ce and hidden T2
    reference = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
    for name in written:
        image = sitk.ReadImage(str(out / name))
        assert image.GetSize() == reference.GetSize()
        assert np.allclose(image.GetOrigin(), reference.GetOrigin())
        assert np.isfinite(sitk.GetArrayFromImage(image)).all() and sitk.GetArrayFromImage(image).any()
    metrics = json.loads((out / "recovery_metrics.json").read_text())["cases"][case]["metrics"]
    assert set(metrics) == {"T2"} and np.isfinite(metrics["T2"]["psnr"]) and -1 <= metrics["T2"]["ssim"] <= 1
    assert (out / f"{case}_recovery_preview.png").stat().st_size > 0
