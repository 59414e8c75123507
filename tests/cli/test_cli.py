"""The ``nnunet_dsmm`` command line: synth, check, convert-brats."""

from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk

from tests.conftest import BIN, make_dataset, run_cmd


def test_every_subcommand_has_help():
    for sub in ("check", "synth", "convert-brats"):
        result = run_cmd(["nnunet_dsmm", sub, "--help"], dict(os.environ))
        assert "usage: nnunet_dsmm " + sub in result.stdout


def test_synth_writes_a_brats_like_region_dataset(tmp_path):
    out = tmp_path / "Dataset950_Synth"
    run_cmd(["nnunet_dsmm", "synth", "-o", str(out), "--num-train", "10", "--num-test", "2", "--shape", "24", "24",
             "24", "--fm-ratio", "0.3", "--data-seed", "3"], dict(os.environ))
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert list(dataset_json["channel_names"].values()) == ["FLAIR", "T1", "T1ce", "T2"]
    assert dataset_json["labels"]["whole tumor"] == [1, 2, 3] and dataset_json["regions_class_order"] == [1, 2, 3]
    manifest = json.loads((out / "missing_manifest.json").read_text())
    assert sum(1 for d in manifest["dropped"].values() if not d) == 3
    seen = set()
    for path in (out / "labelsTr").glob("*.nii.gz"):
        labels = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist())
        assert {0, 1, 3} <= labels <= {0, 1, 2, 3}
        seen |= labels
    assert seen == {0, 1, 2, 3}


def test_synth_plain_labels_are_mutually_exclusive_classes_with_the_same_voxels(tmp_path):
    for kind in ("regions", "plain"):
        run_cmd(["nnunet_dsmm", "synth", "-o", str(tmp_path / kind), "--num-train", "2", "--num-test", "0", "--shape",
                 "24", "24", "24", "--data-seed", "5", "--labels", kind], dict(os.environ))
    plain = json.loads((tmp_path / "plain" / "dataset.json").read_text())
    assert "regions_class_order" not in plain
    assert plain["labels"] == {"background": 0, "oedema": 1, "necrosis": 2, "enhancing tumor": 3}
    for name in ("SyntheticBraTS_000", "SyntheticBraTS_001"):
        arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / kind / "labelsTr" / f"{name}.nii.gz")))
                  for kind in ("regions", "plain")]
        assert np.array_equal(*arrays) and set(np.unique(arrays[1]).tolist()) <= {0, 1, 2, 3}


def test_check_reports_availability_and_errors_without_writing(tmp_path):
    folder, manifest = make_dataset(tmp_path, 952, num_train=5, num_test=1, fm_ratio=0.2)
    (folder / "imagesTr" / "SyntheticBraTS_000_0007.nii.gz").write_bytes(
        (folder / "imagesTs" / "SyntheticBraTS_005_0000.nii.gz").read_bytes())
    os.remove(folder / "labelsTr" / "SyntheticBraTS_001.nii.gz")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run_cmd(["nnunet_dsmm", "check", "--raw", str(folder), "--json", "--no-progress"], dict(os.environ),
                     check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    errors = "\n".join(report["errors"])
    assert "SyntheticBraTS_000_0007.nii.gz" in errors and "not declared" in errors
    assert "case 'SyntheticBraTS_001'" in errors and "no label file" in errors
    cases = report["splits"]["imagesTr"]["cases"]
    for name, dropped in manifest["dropped"].items():
        if name != "SyntheticBraTS_001":
            assert cases[name] == [c not in dropped for c in range(4)]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    text = run_cmd(["nnunet_dsmm", "check", "--raw", str(folder), "--no-progress"], dict(os.environ), check=False)
    assert "full-modal (FM) ratio" in text.stdout and "2 error(s)" in text.stdout


def fake_brats_case(folder, name, rng, shape=(8, 9, 10)):
    folder.mkdir(parents=True)
    for suffix in ("flair", "t1", "t1ce", "t2"):
        sitk.WriteImage(sitk.GetImageFromArray(rng.uniform(1, 100, shape).astype(np.float32)),
                        str(folder / f"{name}_{suffix}.nii.gz"))
    seg = rng.choice([0, 1, 2, 4], size=shape).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(seg), str(folder / f"{name}_seg.nii.gz"))
    return seg


def test_convert_brats_with_split_and_reproducible_manifest(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "brats"
    names = [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    segs = {n: fake_brats_case(source / n, n, rng) for n in names[:4]}
    segs[names[4]] = fake_brats_case(source / "HGG" / names[4], names[4], rng)  # 2018-style nesting
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:3], "val": names[3:4], "test": names[4:]}))
    manifests = []
    for out in ("a", "b"):
        run_cmd(["nnunet_dsmm", "convert-brats", "-i", str(source), "-o", str(tmp_path / out), "--split", str(split),
                 "--fm-ratio", "0.25", "--data-seed", "7"], dict(os.environ))
        manifests.append(json.loads((tmp_path / out / "missing_manifest.json").read_text()))
    assert manifests[0]["dropped"] == manifests[1]["dropped"]
    out = tmp_path / "a"
    assert sorted(manifests[0]["dropped"]) == sorted(names[:4])
    for name, dropped in manifests[0]["dropped"].items():
        present = sorted(int(p.name[-11:-7]) for p in (out / "imagesTr").glob(f"{name}_*.nii.gz"))
        absent = [c for c in range(4) if c not in present]
        assert set(absent) <= set(dropped)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{name}.nii.gz")))
        expected = np.select([segs[name] == 1, segs[name] == 2, segs[name] == 4], [2, 1, 3], 0)
        assert np.array_equal(label, expected)
    assert len(list((out / "imagesTs").glob(f"{names[4]}_*.nii.gz"))) == 4
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": names[:3], "val": names[3:4]}]
    assert BIN.exists()


def fake_brats2023_case(folder, name, rng, labels=(0, 1, 2, 3), shape=(8, 8, 8)):
    """A BraTS 2023 GLI case folder: ``<name>-t1n``, ``-t1c``, ``-t2w``, ``-t2f`` and ``-seg``."""
    folder.mkdir(parents=True)
    for suffix in ("t1n", "t1c", "t2w", "t2f"):
        sitk.WriteImage(sitk.GetImageFromArray(rng.uniform(1, 100, shape).astype(np.float32)),
                        str(folder / f"{name}-{suffix}.nii.gz"))
    seg = rng.choice(labels, size=shape).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(seg), str(folder / f"{name}-seg.nii.gz"))
    return seg


def test_convert_brats_2023_keeps_every_modality_by_default_and_maps_the_labels(tmp_path):
    rng = np.random.default_rng(1)
    source = tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    names = [f"BraTS-GLI-{i:05d}-000" for i in range(4)]
    segs = {n: fake_brats2023_case(source / n, n, rng) for n in names[:3]}
    segs[names[3]] = fake_brats2023_case(source / names[3], names[3], rng, labels=(0, 1, 2, 3, 4))  # 2024: cavity
    out = tmp_path / "Dataset960_BraTS2023"
    result = run_cmd(["nnunet_dsmm", "convert-brats", "-i", str(source), "-o", str(out)], dict(os.environ))
    assert "4 training cases (0 with modalities removed)" in result.stdout
    assert "BraTS 2023/2024 GLI" in result.stdout
    manifest = json.loads((out / "missing_manifest.json").read_text())
    assert manifest["naming"] == "BraTS 2023/2024 GLI" and manifest["fm_ratio"] is None
    assert manifest["dropped"] == {n: [] for n in names} and manifest["test_cases"] == []
    for name in names:
        assert sorted(p.name for p in (out / "imagesTr").glob(f"{name}_*")) == [
            f"{name}_{c:04d}.nii.gz" for c in range(4)]
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{name}.nii.gz")))
        expected = np.select([segs[name] == 1, segs[name] == 2, segs[name] == 3], [2, 1, 3], 0)
        assert np.array_equal(label, expected)
    # channel 0 is FLAIR, read from -t2f
    flair = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "imagesTr" / f"{names[0]}_0000.nii.gz")))
    t2f = sitk.GetArrayFromImage(sitk.ReadImage(str(source / names[0] / f"{names[0]}-t2f.nii.gz")))
    assert np.array_equal(flair, t2f)
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {
        "0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}


def test_convert_brats_seeded_split_writes_a_test_set_and_refuses_other_sizes(tmp_path):
    rng = np.random.default_rng(2)
    source = tmp_path / "MICCAI_BraTS2020_TrainingData"
    names = [f"BraTS20_Training_{i:03d}" for i in range(1, 7)]
    for name in names:
        fake_brats_case(source / name, name, rng)
    out = tmp_path / "split"
    run_cmd(["nnunet_dsmm", "convert-brats", "-i", str(source), "-o", str(out), "--split", "3/1/2"], dict(os.environ))
    manifest = json.loads((out / "missing_manifest.json").read_text())
    split = manifest["split"]
    assert [len(split[k]) for k in ("train", "val", "test")] == [3, 1, 2]
    assert sorted(split["train"] + split["val"] + split["test"]) == names
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [f"{n}.nii.gz" for n in split["test"]]
    assert len(list((out / "imagesTs").iterdir())) == 8 and len(list((out / "imagesTr").iterdir())) == 16
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": split["train"], "val": split["val"]}]

    paper = run_cmd(["nnunet_dsmm", "convert-brats", "-i", str(source), "-o", str(tmp_path / "paper"), "--split",
                     "brats2020"], dict(os.environ), check=False)
    assert paper.returncode == 2 and "Traceback" not in paper.stderr
    assert "--split brats2020 needs 369 cases (219/50/100 train/val/test), the folder has 6" in paper.stderr
    assert "the same proportions: --split 3/1/2" in paper.stderr
    assert not (tmp_path / "paper").exists()


def test_convert_brats_names_a_folder_it_does_not_recognise_and_leaves_nothing(tmp_path):
    rng = np.random.default_rng(3)
    source = tmp_path / "Task01_BrainTumour"
    (source / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(rng.uniform(1, 100, (8, 8, 8)).astype(np.float32)),
                    str(source / "imagesTr" / "BRATS_001.nii.gz"))
    result = run_cmd(["nnunet_dsmm", "convert-brats", "-i", str(source), "-o", str(tmp_path / "out")],
                     dict(os.environ), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"no BraTS case folders below {source}" in result.stderr and "nnUNetv2_convert_MSD_dataset" in result.stderr
    assert not (tmp_path / "out").exists()

    fake_brats2023_case(source / "BraTS-GLI-00001-000", "BraTS-GLI-00001-000", rng, labels=(0, 1, 2, 3, 5))
    bad = run_cmd(["nnunet_dsmm", "convert-brats", "-i", str(source), "-o", str(tmp_path / "out")],
                  dict(os.environ), check=False)
    assert bad.returncode == 2 and "unexpected BraTS 2023/2024 GLI labels [5]" in bad.stderr
    assert not (tmp_path / "out").exists()


def test_errors_of_ours_exit_with_2_and_a_message_without_traceback(tmp_path):
    folder, _ = make_dataset(tmp_path, 953, num_train=2, num_test=0)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    again = run_cmd(["nnunet_dsmm", "synth", "-o", str(folder), "--num-train", "2"], dict(os.environ), check=False)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.startswith("nnunet-dsmm:") and "already holds a dataset" in again.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before

    env = {**os.environ, "nnUNet_raw": str(tmp_path / "raw"), "nnUNet_results": str(tmp_path / "results")}
    missing = run_cmd(["nnunet_dsmm", "evaluate", "-d", "953", "-c", "3d_fullres", "-tr", "DSMMTrainer", "-i",
                       str(folder / "imagesTr"), "-l", str(folder / "labelsTr"), "-o", str(tmp_path / "eval")],
                      env, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nnUNetv2_train 953 3d_fullres 0 -p DSMMPlans -tr DSMMTrainer" in missing.stderr
    assert not (tmp_path / "eval").exists()

    usage = run_cmd(["nnunet_dsmm", "check"], dict(os.environ), check=False)
    assert usage.returncode == 2 and "give -d DATASET_ID" in usage.stderr
