"""The phantom (``nnunet_dsmm synth``): determinism, nnU-Net raw format, missing patterns, the MR
physics of its channels, and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_dilation, distance_transform_edt

from nnunet_dsmm.data.synth import (
    TISSUE_INTENSITY,
    TUMOUR_SHIFT,
    SynthConfig,
    SynthError,
    synth_case,
    write_synthetic_dataset,
)
from tests.conftest import run_cmd

CHANNELS = ("FLAIR", "T1", "T1ce", "T2")


def _arrays(folder, part, case):
    images = {i: sitk.ReadImage(str(p)) for i in range(4) if (p := folder / f"images{part}" / f"{case}_{i:04d}.nii.gz")
              .is_file()}
    return images, sitk.ReadImage(str(folder / f"labels{part}" / f"{case}.nii.gz"))


def test_same_seed_same_dataset_other_seed_other_dataset(tmp_path):
    config = dict(shape=(24, 24, 24), num_train=3, num_test=1)
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        write_synthetic_dataset(str(tmp_path / name), SynthConfig(seed=seed, **config))
    same = other = True
    for path in sorted((tmp_path / "a").rglob("*.nii.gz")):
        relative = path.relative_to(tmp_path / "a")
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        same &= np.array_equal(a, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / relative))))
        c_path = tmp_path / "c" / relative
        other &= c_path.is_file() and np.array_equal(a, sitk.GetArrayFromImage(sitk.ReadImage(str(c_path))))
    assert same and not other


def test_every_case_is_valid_nnunet_raw_data_with_the_dropped_channels_kept_aside(tmp_path):
    folder = tmp_path / "Dataset960_Phantom"
    manifest = write_synthetic_dataset(str(folder), SynthConfig(shape=(28, 32, 24), num_train=6, num_test=2,
                                                                fm_ratio=0.0, seed=1, missing_as="mixed"))
    declared = set(json.loads((folder / "dataset.json").read_text())["labels"]["whole tumor"]) | {0}
    for part, cases in (("Tr", manifest["dropped"]), ("Ts", {c: [] for c in manifest["test_cases"]})):
        for case, dropped in cases.items():
            images, label = _arrays(folder, part, case)
            for channel, image in images.items():
                assert image.GetSize() == label.GetSize() and image.GetSpacing() == label.GetSpacing()
                assert image.GetOrigin() == label.GetOrigin() and image.GetDirection() == label.GetDirection()
                array = sitk.GetArrayFromImage(image)
                assert (not array.any()) == (channel in dropped)  # a dropped channel written all zero
            assert sorted(set(range(4)) - set(images) | {c for c, i in images.items()
                                                           if not sitk.GetArrayFromImage(i).any()}) == dropped
            assert set(np.unique(sitk.GetArrayFromImage(label)).tolist()) <= declared
            kept = {c: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "droppedTr" / f"{case}_{c:04d}.nii.gz")))
                    for c in dropped}
            assert all(array.max() > 0 for array in kept.values())  # the true channel, for the oracle teacher
    assert any(manifest["dropped"].values())
    assert sorted(os.listdir(folder / "droppedTr")) == sorted(
        f"{case}_{c:04d}.nii.gz" for case, dropped in manifest["dropped"].items() for c in dropped)


def test_per_modality_missing_rates_through_the_command(tmp_path):
    out = tmp_path / "rates"
    run_cmd(["nnunet_dsmm", "synth", "-o", str(out), "--num-train", "20", "--num-test", "0", "--shape", "24", "24",
             "24", "--missing-rates", "0.2", "0", "0.6", "0.1"], dict(os.environ))
    dropped = json.loads((out / "missing_manifest.json").read_text())["dropped"]
    share = [sum(c in d for d in dropped.values()) / 20 for c in range(4)]
    assert share == [0.2, 0.0, 0.6, 0.1]
    assert not any(len(d) == 4 for d in dropped.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channels_follow_mr_physics(seed):
    subject = synth_case(np.random.default_rng(seed), (40, 40, 40))
    flair, t1, t1ce, t2 = subject.images
    labels = subject.labels
    healthy = labels == 0
    tissues = {name: (fraction > 0.8) & healthy for name, fraction in
               (("grey", subject.grey), ("white", subject.white), ("csf", subject.csf))}
    tissues |= {"oedema": labels == 1, "non-enhancing tumour": (labels == 2) & ~subject.necrosis,
                "enhancing": labels == 3}

    def mean(image, tissue):
        return float(image[tissues[tissue]].mean())

    assert mean(t1, "white") > mean(t1, "grey") > mean(t1, "csf")
    assert mean(t2, "csf") > mean(t2, "grey") > mean(t2, "white")
    assert mean(flair, "csf") < min(mean(flair, "grey"), mean(flair, "white"))
    # enhancing tumour is the brightest tissue in T1ce, and looks like the rest of the core elsewhere
    assert all(mean(t1ce, "enhancing") > 1.3 * mean(t1ce, other) for other in tissues if other != "enhancing")
    for image in (flair, t1, t2):
        assert abs(mean(image, "enhancing") / mean(image, "non-enhancing tumour") - 1) < 0.2
    # oedema shows in FLAIR and T2 against the white matter it lies in
    assert mean(flair, "oedema") > 1.4 * mean(flair, "white") and mean(t2, "oedema") > 1.4 * mean(t2, "white")
    assert mean(flair, "oedema") > 1.15 * mean(flair, "grey")
    # outside T1ce the solid core looks like the oedema next to it; necrosis takes up no contrast
    tissues["adjacent oedema"] = (labels == 1) & binary_dilation(labels >= 2, iterations=2)
    for image in (flair, t2):
        assert abs(mean(image, "non-enhancing tumour") / mean(image, "adjacent oedema") - 1) < 0.35
    if subject.necrosis.any():
        tissues["necrosis"] = subject.necrosis
        assert mean(t1ce, "necrosis") < 0.8 * mean(t1ce, "non-enhancing tumour")


def test_the_documented_contrast_table_is_the_generators():
    """docs/explanation/phantom.md lists each tissue's mean intensities and each tumour compartment's shift."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "explanation" / "phantom.md").read_text()
    names = {"white matter": "white", "grey matter": "grey", "CSF": "csf", "oedema (also in the solid core)": "oedema",
             "necrosis": "necrosis", "enhancing tumour": "enhancing"}
    documented = {}
    for line in text.split("## Contrast")[1].split("\n## ")[0].splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] in names:
            documented[names[cells[0]]] = tuple(float(c.split()[0].strip("*").replace("−", "-")) for c in cells[1:])
    assert documented == {**TISSUE_INTENSITY, **TUMOUR_SHIFT}


def test_tumour_regions_are_not_shells_of_one_outline():
    """The enhancing rim has gaps and an irregular thickness: its share of the core varies between cases."""
    rng = np.random.default_rng(7)
    shares = []
    for _ in range(6):
        labels = synth_case(rng, (40, 40, 40)).labels
        shares.append((labels == 3).sum() / (labels >= 2).sum())
    assert max(shares) - min(shares) > 0.15


def test_the_whole_tumours_outline_does_not_give_the_core():
    """Oedema is a blob of its own, off the core and of independent reach: guessing the core as the whole
    tumour's deepest voxels (as many as the mean core share) finds it poorly (a shell phantom: Dice 0.70)."""
    rng = np.random.default_rng(7)
    cases = [synth_case(rng, (40, 40, 40)).labels for _ in range(12)]
    share = np.mean([(labels >= 2).sum() / (labels >= 1).sum() for labels in cases])
    dice = []
    for labels in cases:
        whole, core = labels >= 1, labels >= 2
        depth = distance_transform_edt(whole)
        guess = whole & (depth >= np.sort(depth[whole])[::-1][int(round(share * whole.sum())) - 1])
        dice.append(2 * (guess & core).sum() / (guess.sum() + core.sum()))
    assert np.mean(dice) < 0.62


@pytest.mark.parametrize("options, message", [
    (["--missing-rates", "0.2", "0", "1.5", "0"], "argument --missing-rates: must be from 0.0 to 1.0, got 1.5"),
    (["--shape", "16", "48", "48"], "too small for a tumour"),
    (["--fm-ratio", "0.2", "--missing-rates", "0", "0", "0.5", "0"], "not allowed with argument"),
])
def test_bad_options_give_named_errors_and_write_nothing(tmp_path, options, message):
    out = tmp_path / "bad"
    result = run_cmd(["nnunet_dsmm", "synth", "-o", str(out), "--num-train", "2", *options], dict(os.environ),
                     check=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_template_package_is_a_named_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    (tmp_path / "nilearn").mkdir()
    (tmp_path / "nilearn" / "__init__.py").write_text("")  # a nilearn without its data folder
    result = run_cmd(["nnunet_dsmm", "synth", "-o", str(tmp_path / "out"), "--num-train", "2"], env, check=False)
    assert result.returncode != 0 and "pip install nilearn" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_config_errors_name_the_problem():
    with pytest.raises(SynthError, match="one missing rate in"):
        SynthConfig(missing_rates=[0.1, 0.2]).validate()
