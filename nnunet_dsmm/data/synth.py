"""Synthetic BraTS-like dataset in nnU-Net raw format (the embedded default for demo and tests).

Four channels (FLAIR, T1, T1ce, T2) over a brain with white matter, grey matter and CSF,
texture, a smooth bias field and noise. Tumours follow the BraTS appearance so that each
sub-region needs the right modality: oedema bright on FLAIR and T2, enhancing rim bright on
T1ce only, necrotic core dark on T1/T1ce and bright on T2. Labels use nnU-Net's own BraTS
conversion (1 oedema, 2 necrosis / non-enhancing core, 3 enhancing) with regions WT/TC/ET, or
(``labels="plain"``) the same values as three mutually exclusive classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from nnunet_dsmm.data.brats import BRATS_CHANNELS, brats_dataset_json
from nnunet_dsmm.data.raw_data import write_raw_dataset
from nnunet_dsmm.model.modalities import simulate_missing

# Mean intensity per tissue and channel (FLAIR, T1, T1ce, T2).
TISSUE_INTENSITY = {
    "csf": (0.15, 0.20, 0.20, 0.95),
    "grey": (0.55, 0.50, 0.52, 0.55),
    "white": (0.45, 0.72, 0.72, 0.35),
    "oedema": (0.95, 0.42, 0.44, 0.85),
    "necrosis": (0.45, 0.12, 0.12, 0.90),
    "enhancing": (0.60, 0.48, 1.00, 0.60),
}


@dataclass
class SynthConfig:
    shape: tuple[int, int, int] = (48, 48, 48)
    num_train: int = 20
    num_test: int = 6
    fm_ratio: float = 0.1
    seed: int = 0
    missing_as: str = "absent"
    #: "regions" (WT/TC/ET, as nnU-Net trains BraTS) or "plain" (three mutually exclusive classes)
    labels: str = "regions"


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def synth_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One case: images (4, *shape) float32 and labels (*shape) uint8."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radii = np.array([0.82, 0.9, 0.75]) * rng.uniform(0.92, 1.05, 3)
    boundary = 1 + 0.06 * _smooth_noise(rng, shape, max(shape) / 8)
    r = np.sqrt(sum((grid[i] / radii[i]) ** 2 for i in range(3))) / boundary
    brain = r < 1
    tissue = np.full(shape, "white", dtype=object)
    tissue[(r > 0.78) & brain] = "grey"
    tissue[(r > 0.95) & brain] = "csf"
    for side in (-1, 1):
        ventricle = ((grid[0] / 0.12) ** 2 + ((grid[1] - side * 0.12) / 0.07) ** 2 + ((grid[2] - 0.05) / 0.3) ** 2)
        tissue[ventricle < 1] = "csf"

    labels = np.zeros(shape, dtype=np.uint8)
    centre = rng.uniform(-0.35, 0.35, 3)
    size = rng.uniform(0.22, 0.38)
    d = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(3)))
    d = d * (1 + 0.18 * _smooth_noise(rng, shape, max(shape) / 10))
    core_fraction = rng.uniform(0.4, 0.65)
    oedema = (d < size) & brain
    core = (d < size * core_fraction) & brain
    necrosis = (d < size * core_fraction * rng.uniform(0.45, 0.75)) & brain
    labels[oedema] = 1
    labels[core] = 3
    labels[necrosis] = 2
    tissue[oedema] = "oedema"
    tissue[core] = "enhancing"
    tissue[necrosis] = "necrosis"

    texture = _smooth_noise(rng, shape, 1.5)
    images = np.zeros((4, *shape), dtype=np.float32)
    for c in range(4):
        mean = np.zeros(shape, dtype=np.float32)
        for name, values in TISSUE_INTENSITY.items():
            mean[tissue == name] = values[c]
        bias = np.exp(0.15 * _smooth_noise(rng, shape, max(shape) / 3))
        scale = rng.uniform(600, 1400)
        image = mean * (1 + 0.08 * texture) * bias + 0.03 * rng.standard_normal(shape)
        images[c] = np.where(brain, np.clip(image, 0.01, None) * scale, 0)
    return images, labels


def write_synthetic_dataset(out_dir: str, config: SynthConfig, name: str = "SyntheticBraTS") -> dict:
    """Write imagesTr/labelsTr (with missing modalities), imagesTs/labelsTs (complete),
    dataset.json and ``missing_manifest.json``. Returns the manifest."""
    import SimpleITK as sitk

    rng = np.random.default_rng(config.seed)
    train = [f"{name}_{i:03d}" for i in range(config.num_train)]
    test = [f"{name}_{i:03d}" for i in range(config.num_train, config.num_train + config.num_test)]
    dropped = simulate_missing(train, len(BRATS_CHANNELS), config.fm_ratio, rng)

    def cases():
        for case in train + test:
            images, labels = synth_case(rng, config.shape)
            label = sitk.GetImageFromArray(labels)
            label.SetSpacing((1.0, 1.0, 1.0))
            yield case, list(images), label

    manifest = {"source": "nnunet_dsmm synth", "config": {**config.__dict__, "shape": list(config.shape)}}
    return write_raw_dataset(out_dir, brats_dataset_json(len(train), name, config.labels), cases(), dropped,
                             config.missing_as, rng, manifest, "Synthesising cases")
