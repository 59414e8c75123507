"""Frozen CLIP text encoder (open_clip) for the prompts of Eq. 6, with a registry of named configs.

By default the pretrained tower is loaded (tag or local checkpoint path from
``DSMM_CLIP_PRETRAINED``). ``DSMM_TEXT_ENCODER=untrained`` is an explicit opt-in for offline
tests and demos: an untrained tower with a fixed seed, whose prompts carry no language prior. Its
embeddings depend only on the prompts and the open_clip and torch versions, so they are kept in the
user's cache folder and read from there by the next training that embeds the same prompts.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import torch

from nnunet_dsmm.errors import DSMMError

TEXT_ENCODER_ENV = "DSMM_TEXT_ENCODER"
CLIP_PRETRAINED_ENV = "DSMM_CLIP_PRETRAINED"
UNTRAINED_SEED = 0


@dataclass(frozen=True)
class TextEncoderConfig:
    model_name: str
    pretrained: str
    #: width of the text embedding (open_clip's ``embed_dim`` of the model; checked by the tests)
    width: int
    #: where open_clip downloads the ``pretrained`` weights from (its ``hf_hub``; checked by the tests)
    hf_hub: str


#: the text encoder of the paper's prompts (CLIP ViT-B/32), every trainer's default
DEFAULT_TEXT_ENCODER = "clip-vit-b-32"
TEXT_ENCODERS = {
    DEFAULT_TEXT_ENCODER: TextEncoderConfig("ViT-B-32", "openai", 512, "timm/vit_base_patch32_clip_224.openai/"),
    "clip-vit-b-16": TextEncoderConfig("ViT-B-16", "openai", 512, "timm/vit_base_patch16_clip_224.openai/"),
}


class TextEncoderError(DSMMError, RuntimeError):
    """The text encoder could not be loaded; the message says how to fix it."""


def embedding_dim(name: str) -> int:
    """Width of the text embedding of a registered config (no import of open_clip: prediction needs only this)."""
    return TEXT_ENCODERS[name].width


def untrained_warning(name: str, log: Callable[[str], None]) -> None:
    log("nnunet-dsmm WARNING: " + "!" * 60)
    log(f"nnunet-dsmm WARNING: {TEXT_ENCODER_ENV}=untrained: the {TEXT_ENCODERS[name].model_name} text tower is "
        f"UNTRAINED (seed {UNTRAINED_SEED}); prompts carry NO language prior. For tests and offline demos only.")
    log("nnunet-dsmm WARNING: " + "!" * 60)


def load_clip(name: str, log: Callable[[str], None] = print) -> torch.nn.Module:
    """The CLIP model of config ``name``, pretrained unless ``DSMM_TEXT_ENCODER=untrained``."""
    import open_clip

    config = TEXT_ENCODERS[name]
    mode = os.environ.get(TEXT_ENCODER_ENV, "pretrained")
    if mode == "untrained":
        untrained_warning(name, log)
        with torch.random.fork_rng():
            torch.manual_seed(UNTRAINED_SEED)
            return open_clip.create_model(config.model_name, pretrained=None).eval()
    if mode != "pretrained":
        raise TextEncoderError(f"nnunet-dsmm: {TEXT_ENCODER_ENV}={mode!r}; use 'pretrained' (default) or 'untrained'")
    pretrained = os.environ.get(CLIP_PRETRAINED_ENV) or config.pretrained
    try:
        model = open_clip.create_model(config.model_name, pretrained=pretrained, require_pretrained=True)
    except Exception as error:  # open_clip raises several kinds for missing files and failed downloads
        raise TextEncoderError(
            f"nnunet-dsmm: could not load the pretrained CLIP text encoder {config.model_name} ({pretrained!r}): "
            f"{error}\nWithout network access, download the open_clip checkpoint elsewhere and set "
            f"{CLIP_PRETRAINED_ENV}=/path/to/open_clip_pytorch_model.bin, or set {TEXT_ENCODER_ENV}=untrained "
            f"for tests and offline demos (prompts then carry no language prior).") from error
    log(f"nnunet-dsmm: CLIP text encoder {config.model_name} loaded from {pretrained!r}")
    return model.eval()


def _weights_cached(config: TextEncoderConfig, tag: str) -> bool:
    """Whether open_clip's pretrained ``tag`` of the model is in the Hugging Face cache (no download; open_clip
    is imported only for a tag other than the registered one)."""
    from huggingface_hub import try_to_load_from_cache

    if tag == config.pretrained:
        hub = config.hf_hub
    else:
        with warnings.catch_warnings():  # open_clip's import warns about torch internals the user cannot change
            warnings.simplefilter("ignore", FutureWarning)
            from open_clip.pretrained import get_pretrained_cfg
        hub = get_pretrained_cfg(config.model_name, tag).get("hf_hub", "")
    if not hub:
        return False
    repo, filename = os.path.split(hub)
    names = {filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors"}
    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def offline_warning(name: str) -> str | None:
    """Why loading the text encoder ``name`` would need the network, or fail; None when its weights are a
    local file or already downloaded, or ``DSMM_TEXT_ENCODER=untrained`` was chosen. Downloads nothing."""
    if os.environ.get(TEXT_ENCODER_ENV, "pretrained") == "untrained":
        return None
    config = TEXT_ENCODERS[name]
    pretrained = os.environ.get(CLIP_PRETRAINED_ENV) or config.pretrained
    if os.path.isfile(pretrained) or _weights_cached(config, pretrained):
        return None
    where = (f"{CLIP_PRETRAINED_ENV}={pretrained} is neither a file nor an open_clip tag downloaded here"
             if os.environ.get(CLIP_PRETRAINED_ENV) else
             f"the CLIP weights of {config.model_name} ({pretrained!r}) are not downloaded on this machine")
    return (f"nnunet-dsmm WARNING: {where}; a training that embeds prompts downloads them and stops on a node "
            f"without network. Set {CLIP_PRETRAINED_ENV}=/path/to/open_clip_pytorch_model.bin, or "
            f"{TEXT_ENCODER_ENV}=untrained to train without a language prior.")


def untrained_cache_file(prompts: Sequence[str], name: str) -> str:
    """Where the untrained tower's embeddings of ``prompts`` are kept: ``$XDG_CACHE_HOME/nnunet_dsmm``
    (default ``~/.cache/nnunet_dsmm``), named by the model, the prompts and the open_clip and torch versions."""
    key = "\n".join([TEXT_ENCODERS[name].model_name, str(UNTRAINED_SEED), version("open_clip_torch"),
                     torch.__version__, *prompts])
    folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nnunet_dsmm")
    return os.path.join(folder, f"untrained_{name}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt")


@torch.no_grad()
def encode_prompts(prompts: Sequence[str], name: str, log: Callable[[str], None]) -> torch.Tensor:
    """(N, D) L2-normalised text embeddings Z_t of the prompts, computed by the CLIP text tower."""
    import open_clip

    model = load_clip(name, log)
    tokens = open_clip.get_tokenizer(TEXT_ENCODERS[name].model_name)(list(prompts))
    embeddings = model.encode_text(tokens).float()
    return embeddings / embeddings.norm(dim=-1, keepdim=True)


def embed_prompts(prompts: Sequence[str], name: str, log: Callable[[str], None] = print) -> torch.Tensor:
    """(N, D) L2-normalised text embeddings Z_t of the prompts (Eq. 6); those of the untrained tower are
    read from the cache when an earlier run computed them (``untrained_cache_file``)."""
    if os.environ.get(TEXT_ENCODER_ENV, "pretrained") != "untrained":
        return encode_prompts(prompts, name, log)
    path = untrained_cache_file(prompts, name)
    if os.path.isfile(path):
        untrained_warning(name, log)
        log(f"nnunet-dsmm: untrained prompt embeddings read from {path}")
        return torch.load(path, map_location="cpu", weights_only=True)
    embeddings = encode_prompts(prompts, name, log)
    try:  # written under a temporary name and renamed: runs at the same time never read half a file
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".tmp") as file:
            torch.save(embeddings, file)
            file.flush()
            os.link(file.name, path)  # the temporary name goes when the file closes, whatever happened
    except FileExistsError:  # another run cached the same embeddings first
        pass
    except OSError as error:  # a read-only home only costs the next run the same seconds
        log(f"nnunet-dsmm: untrained prompt embeddings not cached ({error})")
    return embeddings
