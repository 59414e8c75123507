"""``nnunet_dsmm ablate`` through the console script on the session's planned dataset: every row trained
by convention, the tables written, finished trainings kept, more folds added; a failing training named.
The paper's other tables drawn from an evaluation of their trainers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_dsmm.data.brats import BRATS_CHANNELS, brats_dataset_json
from nnunet_dsmm.evaluation.prediction import code_string
from nnunet_dsmm.evaluation.reporting import ablation_markdown, difference_heatmap, figure5
from nnunet_dsmm.evaluation.results import CaseScore, summarise
from nnunet_dsmm.experiments.ablation import TABLES, evaluated_trainers, selected_tables
from nnunet_dsmm.model.modalities import all_combinations, combination_name
from tests.conftest import SYNTH_ID, run_cmd

DATASET_ID = SYNTH_ID


def test_table_3_and_fig_5_are_drawn_from_the_evaluation_of_their_trainers(tmp_path):
    """What ``ablate --table all`` writes for Table 3 and Fig. 5 once its trainers are evaluated (the slow
    test below trains and draws Table 2 and the baselines through the command)."""
    trainers = evaluated_trainers(selected_tables("all"))
    rng = np.random.default_rng(0)
    scores = [CaseScore(trainer, "", f"c{case}", combination_name(code, BRATS_CHANNELS), code_string(code), region,
                        0.4 + 0.02 * rank + rng.normal(0, 0.01), 5.0)
              for rank, trainer in enumerate(trainers) for case in range(6) for code in all_combinations(4)
              for region in ("whole tumor", "tumor core", "enhancing tumor")]
    result = summarise(scores, brats_dataset_json(6, "X", "regions"))
    table3 = ablation_markdown(TABLES["3"], result)
    assert table3.startswith("**Table 3") and "| (d) | `DSMMTrainerNoPGMA` | ✓ | ✓ | ✓ |" in table3
    assert [line.split("|")[1].strip() for line in table3.splitlines() if line.startswith("| (")] == \
        ["(a)", "(b)", "(c)", "(d)"]
    assert "**Fig. 5" in ablation_markdown(TABLES["fig5"], result)
    figure5(TABLES["fig5"], result, str(tmp_path / "fig5.png"))
    for table in ("3", "fig5"):
        difference_heatmap(TABLES[table], result, str(tmp_path / f"differences_{table}.png"))
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("fig5.png", "differences_3.png",
                                                                    "differences_fig5.png"))


@pytest.mark.slow
def test_ablate_trains_every_row_by_convention_writes_the_tables_and_resumes(planned, tmp_path):
    _, folder, _, env = planned
    out = tmp_path / "ablation"
    command = ["nnunet_dsmm", "ablate", "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "--table", "all",
               "-i", str(folder / "imagesTs"), "-l", str(folder / "labelsTs"), "-o", str(out), "-device", "cpu",
               "--budget", "smoke", "--disable-tta"]
    plan = run_cmd(command + ["--dry-run"], env)
    assert plan.stdout.count(" would train ") == 14 and "27 epochs (81 training iterations) to run" in plan.stdout
    assert not out.joinpath("nnUNet_results").exists()
    # trained: Table 2 (Table 3's and Fig. 5's own rows are drawn in the test above, and each of their
    # trainers trains under tests/trainers/test_ddp.py and is found by nnU-Net in tests/nnunet/test_discovery.py)
    command[command.index("--table") + 1] = "2"
    first = run_cmd(command, env, timeout=1800)
    models = out / "nnUNet_results" / f"Dataset{DATASET_ID}_Synth"
    epochs = {m.name.split("__")[0]: json.loads((m / "fold_0" / "dsmm_schedule.json").read_text())["num_epochs"]
              for m in models.iterdir()}
    # every row, the earlier stages it chains to (Mask-Rec: stage 2 without DA), and the two baselines
    assert epochs == {"DSMMBaselineTrainer": 2, "DSMMTeacherTrainer": 2, "DSMMPretrainTrainer": 1,
                      "DSMMPretrainNoDATrainer": 1,
                      "DSMMFinetuneMaskRecTrainer": 2, "DSMMFinetuneDATrainer": 2, "DSMMTrainerNoCTD": 2,
                      "DSMMTrainer": 2, "DSMMBaselineEpochMatchedTrainer": 3}
    mask_rec_log = next((models / "DSMMFinetuneMaskRecTrainer__DSMMPlans__3d_fullres" / "fold_0").glob(
        "training_log_*.txt")).read_text()
    assert "DSMMPretrainNoDATrainer" in mask_rec_log and "loaded from" in mask_rec_log
    # the study evaluates on the test cases: nnU-Net's final validation is skipped, and each log says so
    assert "final validation skipped" in mask_rec_log and not any(models.glob("*/fold_0/validation"))
    document = (out / "ablation.md").read_text()
    assert "**Table 2" in document and "**Baselines" in document and "**Table 3" not in document
    table2 = document.split("**Table 2")[1].split("**Baselines")[0]
    labels = [line.split("|")[1].strip() for line in table2.splitlines() if line.startswith("| ")][1:]
    assert labels == ["Mask-Rec", "+ DA", "+ PGMA", "+ CTD"]
    assert (out / "differences_2.png").stat().st_size > 1000
    assert "Table 2" in first.stdout
    assert "0 epochs (0 training iterations) to run" in run_cmd(command + ["--dry-run"], env).stdout
    # which trainer, in the same folder: every training it shares with the paper's tables is kept, only the
    # oracle teacher is new; it reads the kept dropped channels (the complete-then-distill study's table
    # layout, each row against + PGMA: tests/evaluation/test_evaluation.py)
    decisive_command = list(command)
    decisive_command[command.index("--table") + 1] = "decisive"
    resumed = run_cmd(decisive_command, env, timeout=1800)
    assert resumed.stdout.count("already trained, kept") == 5  # baseline, the three stages, + PGMA
    assert {m.name.split("__")[0] for m in models.iterdir()} - set(epochs) == {"DSMMTrainerOracleTeacher"}
    decisive = (out / "ablation.md").read_text().split("**Which trainer")[1]
    assert "**Baselines" not in decisive and (out / "differences_decisive.png").stat().st_size > 1000
    for row in ("DSMMBaselineTrainer", "DSMMTeacherTrainer", "DSMMTrainerNoCTD", "DSMMTrainer",
                "DSMMTrainerOracleTeacher"):
        assert f"| `{row}` |" in decisive, row
    # a second fold in the same folder: fold 0 is kept, fold 1 trains; the tables evaluate the ensemble,
    # a per-fold table each fold's model alone
    two_folds = list(decisive_command)
    two_folds[two_folds.index("-f") + 1:two_folds.index("-f") + 2] = ["0", "1"]
    run_cmd(two_folds, env, timeout=1800)
    assert all((m / "fold_1" / "checkpoint_final.pth").is_file() == (m.name.split("__")[0] in {
        "DSMMBaselineTrainer", "DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainerNoCTD", "DSMMTrainer",
        "DSMMTrainerOracleTeacher"}) for m in models.iterdir())
    document = (out / "ablation.md").read_text()
    assert "ensemble of folds 0, 1" in document.splitlines()[0]
    per_fold = document.split("**Per fold")[1]
    assert "| Row | Trainer | fold 0 | fold 1 | mean ± std over folds | ensemble of folds 0, 1 |" in per_fold
    assert per_fold.count("| + CTD (the full model) | `DSMMTrainer` |") == 1
    for folds, expected in (("fold_0", [0]), ("fold_1", [1]), ("folds_0_1", [0, 1])):
        assert json.loads((out / "evaluation" / folds / "summary.json").read_text())["folds"] == expected


@pytest.mark.slow
def test_ablate_names_the_log_of_a_failing_training(planned, tmp_path):
    _, folder, _, env = planned
    result = run_cmd(["nnunet_dsmm", "ablate", "-d", str(DATASET_ID), "-c", "3d_fullres", "-p", "NoSuchPlans",
                      "--table", "3", "-i", str(folder / "imagesTs"), "-l", str(folder / "labelsTs"),
                      "-o", str(tmp_path / "out"), "-device", "cpu", "--budget", "smoke"], env, check=False)
    log = tmp_path / "out" / "logs" / "seed0_DSMMBaselineTrainer.log"  # the first training
    assert result.returncode == 2 and str(log) in result.stderr and log.is_file()
    assert "Traceback" not in result.stderr
