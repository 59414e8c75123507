"""A BraTS-like phantom on real brain anatomy, in nnU-Net raw format (the embedded default for the
demo and the tests).

Anatomy: the MNI ICBM152 2009a (symmetric) grey- and white-matter probability maps that nilearn
ships in its wheel, CSF the rest of the brain; each subject is the template under a random affine
transform, a smooth elastic deformation and the tumour's mass effect. Contrast: each channel is
mixed from the tissue fractions in the physical order (T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR
is T2 with CSF suppressed; T1ce is T1 plus enhancement), with per-case jitter of the tissue means,
scanner sites with their own contrast curves, a bias field shared by the channels and Rician noise.
Tumour: a lumpy core (non-enhancing tumour, an enhancing rim of irregular thickness with gaps,
necrosis in most cases) that infiltrates the tissue under it and carries the oedema's water, and
oedema as a blob of its own, off the core's centre and of a reach independent of the core's size,
that spreads along the white matter. So outside T1ce the core looks like the oedema around it and the
whole tumour's outline does not give the core's: enhancing tumour and the core's boundary show in
T1ce, necrosis faintly in T1 and T2; oedema shows in FLAIR and T2; T1 is the least informative
channel. Labels use nnU-Net's BraTS convention (1 oedema, 2 necrosis / non-enhancing core,
3 enhancing) with regions WT/TC/ET, or (``labels="plain"``) the same values as three classes.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import (
    binary_closing,
    binary_fill_holes,
    distance_transform_edt,
    gaussian_filter,
    map_coordinates,
    zoom,
)

from nnunet_dsmm.data.brats import BRATS_CHANNELS, brats_dataset_json
from nnunet_dsmm.data.raw_writer import write_raw_dataset
from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.model.modalities import simulate_missing

#: the templates inside nilearn's wheel (nilearn/datasets/data)
TEMPLATE_FILES = {tissue: f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz" for tissue in ("gm", "wm")}
#: the smallest side a phantom may have: below it the tumour's rim is under a voxel thick
MIN_SIDE = 24
#: mean intensity of each tissue in (FLAIR, T1, T1ce, T2), before a case's jitter and site curve
TISSUE_INTENSITY = {
    "white": (0.45, 0.80, 0.80, 0.40),
    "grey": (0.55, 0.55, 0.56, 0.60),
    "csf": (0.08, 0.18, 0.18, 1.00),
}
#: what each tumour compartment adds to the tissue it infiltrates: oedema (vasogenic water, also
#: carried by the solid tumour) brighter FLAIR and T2, darker T1; necrosis a little darker T1 and
#: brighter T2 and no contrast uptake; enhancement brightens T1ce alone
TUMOUR_SHIFT = {
    "oedema": (0.60, -0.20, -0.20, 0.45),
    "necrosis": (0.0, -0.05, -0.25, 0.08),
    "enhancing": (0.0, 0.0, 0.90, 0.0),
}


class SynthError(DSMMError, ValueError):
    """Options the phantom cannot be made with, or its templates are missing."""


@dataclass
class SynthConfig:
    shape: tuple[int, int, int] = (48, 48, 48)
    num_train: int = 20
    num_test: int = 6
    fm_ratio: float = 0.1
    #: per channel, the share of training cases that lack it (instead of ``fm_ratio``'s rule)
    missing_rates: list[float] | None = None
    seed: int = 0
    missing_as: str = "absent"
    #: "regions" (WT/TC/ET, as nnU-Net trains BraTS) or "plain" (three mutually exclusive classes)
    labels: str = "regions"

    def validate(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < MIN_SIDE:
            raise SynthError(f"nnunet-dsmm: synth: shape {list(self.shape)} is too small for a tumour with its "
                             f"sub-regions; every side needs at least {MIN_SIDE} voxels")
        if not 0.0 <= self.fm_ratio <= 1.0:
            raise SynthError(f"nnunet-dsmm: synth: the full-modal ratio must lie in [0, 1], got {self.fm_ratio}")
        if self.missing_rates is not None and (len(self.missing_rates) != len(BRATS_CHANNELS) or
                                               any(not 0.0 <= r <= 1.0 for r in self.missing_rates)):
            raise SynthError(f"nnunet-dsmm: synth: give one missing rate in [0, 1] per channel "
                             f"({', '.join(BRATS_CHANNELS)}), got {self.missing_rates}")


@dataclass(frozen=True)
class Anatomy:
    """The template's tissue fractions fitted into a volume (each (*shape) float32 in [0, 1])."""

    grey: np.ndarray
    white: np.ndarray
    csf: np.ndarray
    #: voxels deep enough in white matter for a tumour centre, (N, 3)
    tumour_sites: np.ndarray
    #: millimetres per voxel
    spacing: float


def template_folder() -> str:
    spec = importlib.util.find_spec("nilearn")
    folder = os.path.join(spec.submodule_search_locations[0], "datasets", "data") if spec else ""
    if not all(os.path.isfile(os.path.join(folder, f)) for f in TEMPLATE_FILES.values()):
        raise SynthError("nnunet-dsmm: synth needs the MNI ICBM152 templates that the nilearn package ships; "
                         "install it with 'pip install nilearn'")
    return folder


@lru_cache(maxsize=4)
def template_anatomy(shape: tuple[int, int, int]) -> Anatomy:
    """The template's tissue fractions, its brain cropped and scaled (isotropically) to fill about 85 %
    of ``shape``; read once per process and shape."""
    import nibabel

    folder = template_folder()
    maps = {t: np.asarray(nibabel.load(os.path.join(folder, f)).dataobj, dtype=np.float32) / 255.0
            for t, f in TEMPLATE_FILES.items()}
    tissue = maps["gm"] + maps["wm"]
    brain = binary_fill_holes(binary_closing(tissue > 0.2, iterations=3))
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(brain))
    extent = np.array([s.stop - s.start for s in box], dtype=float)
    factor = float(np.min(0.85 * np.array(shape) / extent))
    fitted = {}
    for name, volume in (("grey", maps["gm"]), ("white", maps["wm"]), ("brain", brain.astype(np.float32))):
        small = np.clip(zoom(volume[box], factor, order=1), 0, 1)
        canvas = np.zeros(shape, dtype=np.float32)
        offset = [(n - s) // 2 for n, s in zip(shape, small.shape)]
        canvas[tuple(slice(o, o + s) for o, s in zip(offset, small.shape))] = small[
            tuple(slice(0, min(s, n)) for s, n in zip(small.shape, shape))]
        fitted[name] = canvas
    grey, white = fitted["grey"] * fitted["brain"], fitted["white"] * fitted["brain"]
    csf = np.clip(fitted["brain"] - grey - white, 0, 1)
    depth = distance_transform_edt(fitted["brain"] > 0.5)
    sites = np.argwhere((white > 0.6) & (depth > 0.12 * min(shape)))
    return Anatomy(grey, white, csf, sites, 1.0 / factor)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """A smooth random field of unit standard deviation: ``cells`` random values per axis, smoothed and
    upsampled linearly (cheap at any size)."""
    coarse = gaussian_filter(rng.standard_normal((2 * cells,) * len(shape)), 1.0, mode="wrap")
    field = zoom(coarse, [s / (2 * cells) for s in shape], order=1, grid_mode=True,
                 mode="grid-constant")[tuple(slice(0, s) for s in shape)]
    return (field - field.mean()) / (field.std() + 1e-8)


def _subject_coordinates(rng: np.random.Generator, shape: tuple[int, int, int], centre: np.ndarray,
                         mass_radius: float) -> np.ndarray:
    """Where each voxel of the subject samples the template: the tumour's mass effect (tissue pushed
    away from ``centre``), a smooth elastic deformation and a random affine transform, (3, *shape)."""
    grid = np.indices(shape, dtype=np.float32)
    offset = grid - centre[:, None, None, None]
    radius = np.sqrt((offset ** 2).sum(axis=0)) + 1e-6
    push = rng.uniform(0.25, 0.45) * np.exp(-(radius / mass_radius) ** 2)
    points = centre[:, None, None, None] + offset * (1 - push)
    side = min(shape)
    points += np.stack([_smooth_field(rng, shape, 5) for _ in range(3)]) * rng.uniform(0.01, 0.025) * side
    middle = (np.array(shape, dtype=np.float32) - 1) / 2
    angles = np.deg2rad(rng.uniform(-8, 8, 3))
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        rotation = np.eye(3)
        rotation[a, a] = rotation[b, b] = np.cos(angle)
        rotation[a, b], rotation[b, a] = -np.sin(angle), np.sin(angle)
        matrix = matrix @ rotation
    matrix = matrix @ np.diag(1 / rng.uniform(0.92, 1.08, 3))
    shift = rng.uniform(-0.03, 0.03, 3) * np.array(shape)
    flat = points.reshape(3, -1) - middle[:, None]
    return (matrix @ flat + (middle - shift)[:, None]).reshape(3, *shape).astype(np.float32)


def _ellipsoid_distance(grid: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Each voxel's distance from ``centre`` with every axis scaled by ``axes`` (grid: (3, *shape))."""
    return np.sqrt(sum(((grid[i] - centre[i]) / axes[i]) ** 2 for i in range(3)))


def _tumour(rng: np.random.Generator, shape: tuple[int, int, int], centre: np.ndarray,
            white: np.ndarray, csf: np.ndarray, brain: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the tumour's compartments: necrosis, non-enhancing and enhancing tumour (the core) and
    oedema, plus the oedema's strength (1 near the oedema's own centre, fading outwards)."""
    side = min(shape)
    grid = np.indices(shape, dtype=np.float32) - centre[:, None, None, None]
    axes = rng.uniform(0.8, 1.25, 3)
    distance = _ellipsoid_distance(grid, np.zeros(3), axes)
    lumpy = distance / (1 + 0.22 * _smooth_field(rng, shape, 6))
    core_radius = rng.uniform(0.11, 0.16) * side
    core = (lumpy < core_radius) & brain
    # enhancing rim: irregular thickness, and gaps where the core does not enhance
    thickness = core_radius * rng.uniform(0.25, 0.4) * np.clip(1 + 0.6 * _smooth_field(rng, shape, 7), 0.2, None)
    gaps = _smooth_field(rng, shape, 6) < rng.uniform(-1.2, 0.0)
    enhancing = core & (lumpy > core_radius - thickness) & ~gaps
    necrosis = np.zeros(shape, dtype=bool)
    if rng.uniform() < 0.75:
        inner = distance / (1 + 0.25 * _smooth_field(rng, shape, 6))
        necrosis = core & (inner < core_radius * rng.uniform(0.4, 0.65)) & ~enhancing
    # oedema: its own lumpy blob, centred off the core and of a reach independent of the core's size;
    # it spreads along white matter, hardly into grey matter, never into the ventricles
    direction = rng.standard_normal(3)
    oedema_centre = core_radius * rng.uniform(0.0, 0.9) * direction / np.linalg.norm(direction)
    oedema_axes = rng.uniform(0.7, 1.4, 3)
    oedema_distance = _ellipsoid_distance(grid, oedema_centre, oedema_axes)
    oedema_lumpy = oedema_distance / (1 + 0.3 * _smooth_field(rng, shape, 6))
    reach = core_radius * rng.uniform(0.2, 1.6) * (0.25 + white + 0.15 * _smooth_field(rng, shape, 8))
    oedema = (oedema_lumpy < core_radius + np.clip(reach, 0, None)) & brain & ~core & (csf < 0.5)
    fading = np.clip(1.2 - (oedema_lumpy - core_radius) / (reach.clip(1e-3) + 1e-3), 0.5, 1.0)
    strength = np.where(core, np.maximum(fading, 0.7), fading * oedema)
    return {"necrosis": necrosis, "enhancing": enhancing, "non-enhancing": core & ~enhancing & ~necrosis,
            "oedema": oedema, "oedema_strength": strength.astype(np.float32)}


@dataclass(frozen=True)
class PhantomCase:
    """One subject: images (4, *shape) float32 in (FLAIR, T1, T1ce, T2) order, labels (*shape) uint8,
    the healthy tissue fractions it was mixed from (each (*shape) float32) and the necrosis within
    label 2 (bool)."""

    images: np.ndarray
    labels: np.ndarray
    grey: np.ndarray
    white: np.ndarray
    csf: np.ndarray
    necrosis: np.ndarray


def synth_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> PhantomCase:
    """One subject of the phantom (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    anatomy = template_anatomy(shape)
    centre = anatomy.tumour_sites[rng.integers(len(anatomy.tumour_sites))].astype(np.float32)
    centre += rng.uniform(-1, 1, 3) * 0.02 * min(shape)
    coordinates = _subject_coordinates(rng, shape, centre, 0.2 * min(shape))
    grey, white, csf = (map_coordinates(m, coordinates, order=1, mode="constant")
                        for m in (anatomy.grey, anatomy.white, anatomy.csf))
    brain = (grey + white + csf) > 0.5
    tumour = _tumour(rng, shape, centre, white, csf, brain)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[tumour["oedema"]] = 1
    labels[tumour["necrosis"] | tumour["non-enhancing"]] = 2
    labels[tumour["enhancing"]] = 3

    site = np.random.default_rng(int(rng.integers(3)) + 1000)  # one of three scanner sites
    site_gamma = site.uniform(0.8, 1.25, 4)
    bias = np.exp(0.1 * _smooth_field(rng, shape, 4))  # one coil: shared by the channels
    texture = _smooth_field(rng, shape, max(4, min(shape) // 3))
    images = np.zeros((4, *shape), dtype=np.float32)
    for c in range(4):
        jitter = {name: values[c] * rng.normal(1, 0.05) for name, values in TISSUE_INTENSITY.items()}
        tissue = grey * jitter["grey"] + white * jitter["white"] + csf * jitter["csf"]
        tissue += TUMOUR_SHIFT["oedema"][c] * rng.normal(1, 0.1) * tumour["oedema_strength"]
        for name in ("necrosis", "enhancing"):
            tissue += tumour[name] * TUMOUR_SHIFT[name][c] * rng.normal(1, 0.1)
        tissue = np.clip(tissue, 0.01, None) ** site_gamma[c]
        signal = tissue * (1 + 0.04 * texture) * bias * np.exp(0.04 * _smooth_field(rng, shape, 3))
        sigma = rng.uniform(0.02, 0.04)
        rician = np.sqrt((signal + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2)
        images[c] = np.where(brain, rician * rng.uniform(600, 1400), 0)
    return PhantomCase(images, labels, grey, white, csf, tumour["necrosis"])


def write_synthetic_dataset(out_dir: str, config: SynthConfig, name: str = "SyntheticBraTS") -> dict:
    """Write imagesTr/labelsTr (with missing modalities; the dropped channels themselves in
    ``droppedTr``, which no trainer but the oracle reads), imagesTs/labelsTs (complete), dataset.json
    and ``missing_manifest.json``. Returns the manifest."""
    import SimpleITK as sitk

    config.validate()
    spacing = template_anatomy(tuple(config.shape)).spacing
    rng = np.random.default_rng(config.seed)
    train = [f"{name}_{i:03d}" for i in range(config.num_train)]
    test = [f"{name}_{i:03d}" for i in range(config.num_train, config.num_train + config.num_test)]
    dropped = simulate_missing(train, len(BRATS_CHANNELS), config.fm_ratio, rng, config.missing_rates)

    def cases():
        for case in train + test:
            subject = synth_case(rng, config.shape)
            label = sitk.GetImageFromArray(subject.labels)
            label.SetSpacing((spacing,) * 3)
            yield case, list(subject.images), label

    manifest = {"source": "nnunet_dsmm synth (MNI ICBM152 2009a phantom)",
                "config": {**config.__dict__, "shape": list(config.shape)}}
    return write_raw_dataset(out_dir, brats_dataset_json(len(train), name, config.labels), cases(), dropped,
                             config.missing_as, rng, manifest, "Synthesising cases", keep_dropped=True)
