"""Networks of stage 3: the student, with prompt-guided modality adaptation (Eq. 6) or the U-Net's
own prediction layers (the paper's rows without PGMA), and the container that nnU-Net trains,
checkpoints and predicts with (student + recovery module M_rec)."""

from __future__ import annotations

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn
from torch.utils.checkpoint import checkpoint

from nnunet_dsmm.model.hypernetwork import HyperPredictionHeads
from nnunet_dsmm.model.modalities import code_index


def detect_modality_code(x: torch.Tensor) -> torch.Tensor:
    """Modality code c of Eq. 6 from the input itself: (B, M) bool, False for a channel that is all
    zero where another channel is not. A sample that is zero everywhere counts as complete."""
    low, high = torch.aminmax(x.flatten(2), dim=2)  # one pass over x, no mask the size of x
    present = (low != 0) | (high != 0)
    present[~present.any(dim=1)] = True
    return present


def _decoder_stage(transpconv: nn.Module, stage: nn.Module, lres: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    return stage(torch.cat((transpconv(lres), skip), dim=1))


def unet_features(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, checkpoint_stages: bool = False
                  ) -> tuple[list, list]:
    """Multi-scale features of a U-Net: encoder stage outputs (bottleneck last) and decoder stage
    outputs (lowest resolution first), without the prediction layers. With ``checkpoint_stages``
    only these outputs are kept for the backward pass; each stage's inner activations are
    recomputed there, one stage at a time."""
    def run(function, *inputs):
        return checkpoint(function, *inputs, use_reentrant=False) if checkpoint_stages else function(*inputs)

    stem = getattr(encoder, "stem", None)
    h = run(stem, x) if stem is not None else x
    skips = []
    for stage in encoder.stages:
        h = run(stage, h)
        skips.append(h)
    features, lres = [], skips[-1]
    for s, stage in enumerate(decoder.stages):
        lres = run(_decoder_stage, decoder.transpconvs[s], stage, lres, skips[-(s + 2)])
        features.append(lres)
    return skips, features


def complete_code(x: torch.Tensor) -> torch.Tensor:
    """The (B, M) code of full-modal input: every channel present."""
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


class FullModalPrediction(nn.Module):
    """A segmentation network's output for full-modal input (φθ's reconstruction in Eq. 3): a
    prompt-adaptive network gets the all-modalities code, a plain U-Net just the input."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor):
        return self.network(x, complete_code(x)) if isinstance(self.network, SegmentationUNet) else self.network(x)


class TeacherOutputs(nn.Module):
    """What the frozen teacher T gives complete-then-distill on the completed x̂_full: its multi-scale
    features (Eq. 4) and, when ``with_prediction``, its full-resolution logits for L_Mrec (Eq. 5), in
    one forward pass; a prompt-adaptive T predicts with the all-modalities code. ``checkpoint_stages``
    trades one more forward pass for T's inner activations when a graph is built."""

    def __init__(self, unet: nn.Module, with_prediction: bool, checkpoint_stages: bool = False):
        super().__init__()
        self.unet, self.with_prediction, self.checkpoint_stages = unet, with_prediction, checkpoint_stages

    def forward(self, x: torch.Tensor) -> tuple[list, torch.Tensor | None]:
        skips, features = unet_features(self.unet.encoder, self.unet.decoder, x,
                                        self.checkpoint_stages and torch.is_grad_enabled() and x.requires_grad)
        logits = None
        if self.with_prediction:
            logits = self.unet.predict(skips, features, complete_code(x))[0] \
                if isinstance(self.unet, SegmentationUNet) else self.unet.decoder.seg_layers[-1](features[-1])
        return skips + features, logits


def freeze_unused_heads(unet: nn.Module) -> nn.Module:
    """A U-Net without deep supervision only uses its last prediction layer; freeze the others so
    that no trainable parameter goes unused (DDP requires that)."""
    unet.decoder.seg_layers[:-1].requires_grad_(False)
    return unet


class SegmentationUNet(nn.Module):
    """The plan's U-Net as a segmentation model of stage 3 with its own prediction layers (no PGMA):
    ``forward(x, code)`` and ``forward_with_features(x, code)`` as ``PromptAdaptiveUNet``'s, the code
    unused. Deep supervision as the decoder's."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.encoder, self.decoder = unet.encoder, unet.decoder

    def predict(self, skips: list, features: list, code: torch.Tensor | None) -> list[torch.Tensor]:
        """Logits of the used decoder stages (highest resolution first) from the features."""
        last = len(features) - 1
        used = range(len(features)) if self.decoder.deep_supervision else [last]
        return [self.decoder.seg_layers[i](features[i]) for i in used][::-1]

    def forward_with_features(self, x: torch.Tensor, code: torch.Tensor | None = None):
        """(segmentation, features); segmentation is a list (highest resolution first) with deep
        supervision, else one tensor. ``code`` defaults to the one detected in ``x``."""
        if code is None:
            code = detect_modality_code(x)
        skips, features = unet_features(self.encoder, self.decoder, x)
        outputs = self.predict(skips, features, code)
        return (outputs if self.decoder.deep_supervision else outputs[0]), skips + features

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None):
        return self.forward_with_features(x, code)[0]


#: what drives the hypernetwork: CLIP prompt embeddings, a 2-layer MLP of the binary code (Fig. 5), or
#: nothing (a control: the indicator is zero, so the generated layers are the same for every input)
PROMPT_SOURCES = ("text", "binary", "unconditioned")


class PromptAdaptiveUNet(SegmentationUNet):
    """U-Net whose prediction layers come from the hypernetwork of Eq. 6, driven by Z_v (global
    average pooling of the bottleneck) and Z_t (stored CLIP embedding of the code's prompt, or a
    2-layer MLP of the binary code when ``prompt_source='binary'``); with ``'unconditioned'`` the
    indicator Z_v ⊕ Z_t is replaced by zeros (same parameters, no adaptation to the input)."""

    def __init__(self, unet: nn.Module, num_modalities: int, num_outputs: int, prompt_source: str = "text",
                 prompt_dim: int = 512):
        if prompt_source not in PROMPT_SOURCES:
            raise ValueError(f"prompt_source must be one of {PROMPT_SOURCES}, got {prompt_source!r}")
        super().__init__(unet)
        del self.decoder.seg_layers  # replaced by the generated heads
        self.num_modalities = num_modalities
        self.prompt_source = prompt_source
        if prompt_source == "text":
            self.register_buffer("prompt_embeddings", torch.zeros(2**num_modalities - 1, prompt_dim))
        elif prompt_source == "binary":
            self.code_mlp = nn.Sequential(nn.Linear(num_modalities, prompt_dim), nn.LeakyReLU(inplace=True),
                                          nn.Linear(prompt_dim, prompt_dim))
        bottleneck_channels = self.encoder.output_channels[-1]
        decoder_channels = feature_level_channels(self.encoder, self.decoder)[len(self.encoder.output_channels):]
        self.heads = HyperPredictionHeads(decoder_channels, num_outputs, bottleneck_channels + prompt_dim)

    def prompt_embedding(self, code: torch.Tensor) -> torch.Tensor:
        """Z_t for a (B, M) bool code."""
        if self.prompt_source == "text":
            return self.prompt_embeddings[code_index(code)]
        return self.code_mlp(code.float())

    def predict(self, skips: list, features: list, code: torch.Tensor | None) -> list[torch.Tensor]:
        """Eq. 6: prediction layers generated from Z_v ⊕ Z_t, applied to the used decoder stages."""
        bottleneck = skips[-1]
        if self.prompt_source == "unconditioned":
            indicator = bottleneck.new_zeros(len(bottleneck), self.heads.mlp[0].in_features, dtype=torch.float32)
        else:
            z_v = bottleneck.float().mean(dim=tuple(range(2, bottleneck.ndim)))
            indicator = torch.cat((z_v, self.prompt_embedding(code).to(z_v.dtype)), dim=1)
        last = len(features) - 1
        used = list(range(len(features))) if self.decoder.deep_supervision else [last]
        return self.heads(indicator, [features[i] for i in used], used)[::-1]


def feature_level_channels(encoder: nn.Module, decoder: nn.Module) -> list[int]:
    """Channels of each level that ``unet_features`` returns: encoder stages (bottleneck last), then decoder stages."""
    channels = list(encoder.output_channels)
    return channels + [channels[-(s + 2)] for s in range(len(decoder.stages))]


class FeatureAdaptors(nn.Module):
    """One learnable 1×1(×1) convolution per feature level that maps the student's features into the
    teacher's channel basis before Eq. 4 (a FitNets-style regressor). Each starts as the identity, so
    training starts from Eq. 4 as the paper writes it."""

    def __init__(self, conv_op: type[nn.Module], channels: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(conv_op(c, c, kernel_size=1) for c in channels)
        with torch.no_grad():
            for conv in self.convs:
                c = conv.in_channels
                conv.weight.copy_(torch.eye(c).reshape(c, c, *[1] * (conv.weight.ndim - 2)))
                conv.bias.zero_()

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.convs):
            raise ValueError(f"{len(self.convs)} feature adaptors for {len(features)} feature levels")
        return [conv(f) for conv, f in zip(self.convs, features)]


class DSMMNetwork(nn.Module):
    """What nnU-Net trains and saves: the student S and the recovery module M_rec.

    ``forward(x)`` is the student alone (prediction). During complete-then-distill training,
    ``forward(x_student, code, real=x_a, available=available)`` also completes the real data with M_rec
    (x̂_full keeps the real channels, M_rec's output fills the missing ones) and returns
    ``(segmentation, student_features, x_full)``; one forward call keeps DDP correct. With ``adaptors``
    the student's features are returned through them (``FeatureAdaptors``); prediction never uses them.
    """

    def __init__(self, student: SegmentationUNet, recovery: nn.Module, adaptors: FeatureAdaptors | None = None):
        super().__init__()
        self.student, self.recovery, self.adaptors = student, recovery, adaptors
        #: run M_rec in every training step, even when no sample misses a channel (DDP needs every
        #: trainable parameter to take part in each step)
        self.recover_every_step = False
        #: recompute M_rec's inner activations stage by stage in the backward pass instead of keeping them
        self.checkpoint_recovery = False

    @property
    def decoder(self) -> nn.Module:  # nnU-Net toggles deep supervision through network.decoder
        return self.student.decoder

    def complete(self, real: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """x̂_full = available real channels, M_rec's reconstruction for the missing ones. M_rec runs
        only on the samples that miss a channel; the others are their real data."""
        rows = torch.nonzero(~available.all(dim=1)).flatten()
        if rows.numel() == 0:
            if not self.recover_every_step:
                return real
            rows = rows.new_zeros(1)  # a complete sample: M_rec takes part with weight 0
        real_weight = available[rows].reshape(len(rows), -1, *([1] * (real.ndim - 2))).to(real.dtype)
        subset = real[rows]
        features = unet_features(self.recovery.encoder, self.recovery.decoder, subset,
                                 self.checkpoint_recovery and torch.is_grad_enabled())[1]
        reconstruction = self.recovery.decoder.seg_layers[-1](features[-1])
        completed = subset * real_weight + reconstruction.to(real.dtype) * (1 - real_weight)
        return completed if len(rows) == len(real) else real.index_copy(0, rows, completed)

    def forward(self, x, code=None, real=None, available=None):
        if real is None:
            return self.student(x, code)
        segmentation, features = self.student.forward_with_features(x, code)
        if self.adaptors is not None:
            features = self.adaptors(features)
        return segmentation, features, self.complete(real, available)


def plan_unet(configuration_manager, num_input_channels: int, num_outputs: int, deep_supervision: bool) -> nn.Module:
    """The plan's auto-configured U-Net, as nnU-Net builds it."""
    return get_network_from_plans(configuration_manager.network_arch_class_name,
                                  configuration_manager.network_arch_init_kwargs,
                                  configuration_manager.network_arch_init_kwargs_req_import,
                                  num_input_channels, num_outputs, allow_init=True, deep_supervision=deep_supervision)


def build_segmentation_network(configuration_manager, num_input_channels: int, num_output_channels: int,
                               enable_deep_supervision: bool, prompt_source: str | None,
                               prompt_dim: int) -> SegmentationUNet:
    """The plan's U-Net with prompt-guided prediction layers (``prompt_source`` "text" or "binary") or,
    with None, its own (no PGMA)."""
    unet = plan_unet(configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision)
    if prompt_source is None:
        return SegmentationUNet(unet if enable_deep_supervision else freeze_unused_heads(unet))
    return PromptAdaptiveUNet(unet, num_input_channels, num_output_channels, prompt_source, prompt_dim)


def build_dsmm_network(configuration_manager, num_input_channels: int, num_output_channels: int,
                       enable_deep_supervision: bool, prompt_source: str | None, prompt_dim: int,
                       feature_adaptors: bool = False) -> DSMMNetwork:
    """Student (``build_segmentation_network``) and M_rec with the plan's auto-configured U-Net topology,
    and with ``feature_adaptors`` a ``FeatureAdaptors`` for the student's features."""
    student = build_segmentation_network(configuration_manager, num_input_channels, num_output_channels,
                                         enable_deep_supervision, prompt_source, prompt_dim)
    adaptors = FeatureAdaptors(student.encoder.conv_op, feature_level_channels(student.encoder, student.decoder)) \
        if feature_adaptors else None
    return DSMMNetwork(student, freeze_unused_heads(plan_unet(configuration_manager, num_input_channels,
                                                              num_input_channels, False)), adaptors)
