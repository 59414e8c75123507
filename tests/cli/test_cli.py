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
             "24", "--fm-ratio", "0.3", "--seed", "3"], dict(os.environ))
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
                 "24", "24", "24", "--seed", "5", "--labels", kind], dict(os.environ))
    plain = json.loads((tmp_path / "plain" / "dataset.json").read_text())
    assert "regions_class_order" not in plain
    assert plain["labels"] == {"background": 0, "oedema": 1, "necrosis": 2, "enhancing tumor": 3}
    for name in ("SyntheticBraTS_000", "SyntheticBraTS_001"):
        arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / kind / "labelsTr" / f"{name}.nii.gz")))
                  for kind in ("regions", "plain")]
        assert np.array_equal(*arrays) and set(np.unique(arrays[1]).tolist()) <= {0, 1, 2, 3}


def test_synth_tumour_regions_show_on_the_right_modalities(tmp_path):
    folder, _ = make_dataset(tmp_path, 951, num_train=0, num_test=1, shape=(40, 40, 40))
    case = "SyntheticBraTS_000"
    image = {c: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTs" / f"{case}_{i:04d}.nii.gz")))
             for i, c in enumerate(["FLAIR", "T1", "T1ce", "T2"])}
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTs" / f"{case}.nii.gz")))
    brain = image["T1"] > 0

    def mean(channel, mask):
        return image[channel][mask].mean() / image[channel][brain & (label == 0)].mean()

    assert mean("FLAIR", label == 1) > 1.4 and mean("T2", label == 1) > 1.2      # oedema bright on FLAIR/T2
    assert mean("T1ce", label == 3) > 1.3 and mean("T1", label == 3) < 1.0       # enhancing on T1ce only
    assert mean("T1", label == 2) < 0.4 and mean("T1ce", label == 2) < 0.4       # necrosis dark on T1/T1ce


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
                 "--fm-ratio", "0.25", "--seed", "7"], dict(os.environ))
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
