"""Probes of the complete-then-distill study: forward passes of trained models, no training.

For one ``nnUNet_results`` folder (one seed of ``ablate --table ctd``) and complete cases (test cases, or
the complete training cases for hypothesis 5; every channel combination is made by zeroing channels),
regions or plain labels, on every combination:

- per level: the squared error (Eq. 4's term) and linear CKA between T's features of x̂_full and the
  features of the student trained with KD (``DSMMTrainer``) and without (``DSMMTrainerNoCTD``) on the
  dropped input: how close each student comes to T, and at which levels KD can move it at all;
- T's Dice on the real full-modal input and on x̂_full, the dropped input completed by M_rec (the
  pre-trained φθ and DSMMTrainer's refined one): what completion costs the teacher;
- the completion itself: PSNR and SSIM inside the brain of each missing channel of x̂_full against the
  true channel (normalised space), per availability pattern, for φθ (after stage 2) and M_rec (after
  stage 3), beside the trivial completion by the channel's mean (0 after nnU-Net's z-scoring);
- the spread of Z_v (pooled bottleneck, the visual half of Eq. 6's indicator) over the combinations of
  a case, relative to its norm, with and without KD;
- the gradient norms of L_task and β·L_KD on the student's encoder at the trained weights;
- the loss terms every complete-then-distill training logged (nnU-Net's logger in its checkpoint), per
  KD level, averaged over its last quarter of epochs: which levels carry L_KD.

Usage: python benchmarks/ctd_probes.py RESULTS_ROOT DATASET CONFIGURATION IMAGES LABELS OUT.json
(``nnUNet_preprocessed`` set as for training).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nnunet_dsmm.model.losses import feature_distances
from nnunet_dsmm.model.masking import apply_channel_mask
from nnunet_dsmm.model.modalities import all_combinations, channel_names, combination_name
from nnunet_dsmm.model.network import complete_code, unet_features

MODELS = ("DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainerNoCTD", "DSMMTrainer")


def load(root: str, dataset: str, trainer: str, configuration: str) -> nnUNetPredictor:
    predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(
        os.path.join(root, dataset, f"{trainer}__DSMMPlans__{configuration}"), (0,), "checkpoint_final.pth")
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    return predictor


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA of two (B, C, ...) feature maps, voxels as samples (Kornblith et al. 2019)."""
    x = a.transpose(0, 1).flatten(1).T.double()
    y = b.transpose(0, 1).flatten(1).T.double()
    x, y = x - x.mean(0), y - y.mean(0)
    return float((x.T @ y).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def padded(data: np.ndarray, patch: list[int], multiple: int = 16) -> torch.Tensor:
    """The case zero-padded to at least the patch size and to a multiple of the U-Net's total stride."""
    pad = [(0, max(p, -(-s // multiple) * multiple) - s) for s, p in zip(data.shape[1:], patch)]
    return torch.from_numpy(np.pad(data, [(0, 0), *pad])).float()[None]


def prepared_case(predictor: nnUNetPredictor, images: str, labels: str, case: str
                  ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """A complete case as the networks see it: the padded (1, M, ...) input, the preprocessed label map and
    the padded (1, K, ...) masks of the K foreground regions or classes."""
    manager, config, dataset_json = predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    label_manager = manager.get_label_manager(dataset_json)
    groups = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    files = [os.path.join(images, f"{case}_{c:04d}.nii.gz") for c in range(len(channel_names(dataset_json)))]
    data, seg, _ = config.preprocessor_class(verbose=False).run_case(
        files, os.path.join(labels, f"{case}.nii.gz"), manager, config, dataset_json)
    regions = np.stack([np.isin(seg[0], np.atleast_1d(r)) for r in groups])
    return padded(data, config.patch_size), seg, padded(regions.astype(np.float32), config.patch_size).bool()


def masks(logits: torch.Tensor, has_regions: bool) -> torch.Tensor:
    """(1, K, ...) bool masks of the K foreground regions (sigmoid > 0.5) or classes (argmax, background
    dropped) that the network predicts."""
    if has_regions:
        return torch.sigmoid(logits) > 0.5
    winner = logits.argmax(1)
    return torch.stack([winner == k for k in range(1, logits.shape[1])], dim=1)


def dice(logits: torch.Tensor, target: torch.Tensor, has_regions: bool) -> float:
    predicted = masks(logits, has_regions)
    inter = (predicted & target).flatten(2).sum(2).double()
    total = (predicted.flatten(2).sum(2) + target.flatten(2).sum(2)).double()
    return float(torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)).mean())


def completion_quality(truth: np.ndarray, guess: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of one completed channel inside the brain (SSIM: the mean of its map there)."""
    data_range = float(truth[brain].max() - truth[brain].min())
    ssim_map = structural_similarity(truth, guess, data_range=data_range, full=True)[1]
    return {"psnr": float(peak_signal_noise_ratio(truth[brain], guess[brain], data_range=data_range)),
            "ssim": float(ssim_map[brain].mean())}


def logged_terms(root: str, dataset: str, configuration: str) -> dict[str, dict[str, float]]:
    """For every training in ``root`` that logged KD terms: each ``train_loss_<term>`` averaged over the last
    quarter of its epochs."""
    terms = {}
    for folder in sorted(os.listdir(os.path.join(root, dataset))):
        path = os.path.join(root, dataset, folder, "fold_0", "checkpoint_final.pth")
        if not folder.endswith(f"__{configuration}") or not os.path.isfile(path):
            continue
        logging = torch.load(path, map_location="cpu", weights_only=False)["logging"]
        if "train_loss_kd" not in logging:
            continue
        last = max(1, len(logging["train_loss_kd"]) // 4)
        terms[folder.split("__")[0]] = {key.removeprefix("train_loss_"): float(np.nanmean(values[-last:]))
                                        for key, values in logging.items() if key.startswith("train_loss_")}
    return terms


def main(root: str, dataset: str, configuration: str, images: str, labels: str, out: str) -> None:
    nets = {name: load(root, dataset, name, configuration) for name in MODELS}
    teacher_predictor = nets["DSMMTeacherTrainer"]
    teacher = teacher_predictor.network.eval()
    phi = nets["DSMMPretrainTrainer"].network.eval()
    students = {name: nets[name].network.eval() for name in ("DSMMTrainerNoCTD", "DSMMTrainer")}
    ctd = students["DSMMTrainer"]
    manager, config = teacher_predictor.plans_manager, teacher_predictor.configuration_manager
    dataset_json = teacher_predictor.dataset_json
    label_manager = manager.get_label_manager(dataset_json)
    names = channel_names(dataset_json)
    cases = sorted(f[: -len(".nii.gz")] for f in os.listdir(labels) if f.endswith(".nii.gz"))
    has_regions = label_manager.has_regions
    dice_options = {"batch_dice": False, "smooth": 1e-5, "ddp": False}
    task_loss = (DC_and_BCE_loss({}, {**dice_options, "do_bg": True}, use_ignore_label=False) if has_regions
                 else DC_and_CE_loss({**dice_options, "do_bg": False}, {}))
    levels: dict[str, dict[str, list]] = {n: {"mse": [], "cka": []} for n in students}
    teacher_dice: dict[str, dict[str, list]] = {}
    #: completer -> missing channel -> pattern (the available channels) -> [{"psnr", "ssim"} per case]
    completion: dict[str, dict[str, dict[str, list]]] = {}
    spread: dict[str, list] = {n: [] for n in (*students, "DSMMTeacherTrainer")}
    grad_norms: dict[str, list] = {"task": [], "beta_kd": []}
    beta = 0.1
    for case in cases:
        x, seg, target = prepared_case(teacher_predictor, images, labels, case)
        # the task loss's target: the regions as floats, or the label map
        loss_target = (target.float() if has_regions
                       else padded(np.maximum(seg, 0).astype(np.float32), config.patch_size))
        z_v: dict[str, list] = {n: [] for n in spread}
        brain = (x.abs().sum(1)[0] > 0).numpy()
        with torch.no_grad():
            full_logits = teacher.predict(*unet_features(teacher.encoder, teacher.decoder, x), complete_code(x))[0]
        for code in all_combinations(len(names)):
            keep = torch.tensor([code])
            dropped = apply_channel_mask(x, keep)
            label = combination_name(code, names)
            entry = teacher_dice.setdefault(label, {"real full": [], "x_full phi": [], "x_full M_rec": [],
                                                    "dropped, own prompt": []})
            entry["real full"].append(dice(full_logits, target, has_regions))
            with torch.no_grad():
                for key, recovery in (("x_full phi", phi), ("x_full M_rec", ctd.recovery)):
                    completed = x * keep[..., None, None, None] + recovery(x * keep[..., None, None, None]) * (
                        ~keep[..., None, None, None])
                    for c in np.flatnonzero(~np.array(code)):
                        completion.setdefault(key, {}).setdefault(names[c], {}).setdefault(label, []).append(
                            completion_quality(x[0, c].numpy(), completed[0, c].numpy(), brain))
                    skips, feats = unet_features(teacher.encoder, teacher.decoder, completed)
                    entry[key].append(dice(teacher.predict(skips, feats, complete_code(x))[0], target, has_regions))
                    if key == "x_full M_rec":
                        teacher_features = skips + feats
                for c in np.flatnonzero(~np.array(code)):  # the mean: 0 after z-scoring
                    completion.setdefault("channel mean", {}).setdefault(names[c], {}).setdefault(label, []).append(
                        completion_quality(x[0, c].numpy(), np.zeros_like(x[0, c].numpy()), brain))
                skips, feats = unet_features(teacher.encoder, teacher.decoder, dropped)
                entry["dropped, own prompt"].append(dice(teacher.predict(skips, feats, keep)[0], target, has_regions))
                z_v["DSMMTeacherTrainer"].append(skips[-1].mean(dim=(2, 3, 4))[0])
                for name, net in students.items():
                    _, student_features = net.student.forward_with_features(dropped, keep)
                    levels[name]["mse"].append([d.item() for d in feature_distances(teacher_features,
                                                                                       student_features)])
                    levels[name]["cka"].append([linear_cka(t, s) for t, s in zip(teacher_features, student_features)])
                    z_v[name].append(student_features[len(student_features) // 2][0].mean(dim=(1, 2, 3)))
            if sum(code) < len(names):  # gradient norms where the student misses a channel
                ctd.student.decoder.deep_supervision = False
                segmentation, student_features = ctd.student.forward_with_features(dropped, keep)
                encoder = [p for p in ctd.student.encoder.parameters()]
                for key, loss in (("task", task_loss(segmentation, loss_target)),
                                  ("beta_kd", beta * torch.stack(feature_distances(teacher_features,
                                                                                   student_features)).sum())):
                    grads = torch.autograd.grad(loss, encoder, retain_graph=True, allow_unused=True)
                    grad_norms[key].append(float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None))))
        for name, vectors in z_v.items():
            stacked = torch.stack(vectors)
            centre = stacked.mean(0)
            spread[name].append(float((stacked - centre).norm(dim=1).mean() / centre.norm()))
    report = {
        "cases": len(cases), "combinations": len(teacher_dice),
        "levels": {n: {"mse": np.mean(v["mse"], axis=0).tolist(), "cka": np.mean(v["cka"], axis=0).tolist()}
                   for n, v in levels.items()},
        "teacher_dice": {label: {k: float(np.mean(v)) for k, v in entry.items()}
                         for label, entry in teacher_dice.items()},
        "teacher_dice_mean": {k: float(np.mean([np.mean(e[k]) for e in teacher_dice.values()]))
                              for k in next(iter(teacher_dice.values()))},
        "completion": {key: {channel: {label: {m: float(np.mean([e[m] for e in entries])) for m in ("psnr", "ssim")}
                                       for label, entries in patterns.items()}
                             for channel, patterns in channels.items()}
                       for key, channels in completion.items()},
        "z_v_relative_spread": {n: float(np.mean(v)) for n, v in spread.items()},
        "encoder_gradient_norm": {k: float(np.median(v)) for k, v in grad_norms.items()},
        "logged_terms": logged_terms(root, dataset, configuration),
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "teacher_dice"}, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:7])
