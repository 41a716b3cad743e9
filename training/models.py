"""The five architectures (dense, conv, denoise, unet, s2d) and the one dataclass that describes them.

Every architectural choice lives in `ModelConfig`; checkpoints store it, so `build_model(cfg)` can
always rebuild a saved model. The autoencoders expose `.encoder` and `.decoder` (exported as separate
graphs); the decoder ends in logits so training can use BCE-with-logits, and its `forward` applies
the sigmoid so every exported graph answers in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Arch = Literal["dense", "conv", "denoise", "unet", "s2d"]
ARCHS: tuple[Arch, ...] = ("dense", "conv", "denoise", "unet", "s2d")
# Architectures without a code: /denoise only, no encoder/decoder graphs.
CODELESS: tuple[Arch, ...] = ("unet", "s2d")
IMAGE_SIDE = 28
# Encoder resolutions 28 -> 14 -> 7 -> 4 (max-pool with ceil); the decoder resizes back through these.
DECODER_SIZES = (7, 14, 28)
MAX_CODE_NUMBERS = 256


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network. `preset()` gives the lesson's and the shipped ones."""

    arch: Arch = "denoise"
    # dense: width of the code layer.
    hidden: int = 32
    # conv/denoise: channels and number of 3x3 convs of each encoder stage (at 28, 14, 7; each
    # stage ends in a max-pool) and each decoder stage (at 7, 14, 28; each starts with a resize).
    encoder_widths: tuple[int, ...] = (32, 32, 16)
    encoder_convs: tuple[int, ...] = (1, 1, 1)
    decoder_widths: tuple[int, ...] = (16, 32, 32)
    decoder_convs: tuple[int, ...] = (1, 1, 1)
    # conv/denoise: None makes the last encoder stage's pooled output the code (the lesson); a number
    # adds a linear 3x3 conv at 4x4 to that many code channels, and a 3x3 conv + ReLU back up to
    # `decoder_stem` channels, so the wide low-resolution stages are not squeezed to the code width.
    code_channels: int | None = None
    decoder_stem: int | None = None
    # unet: channels at 28x28; each of the `depth` lower levels doubles it.
    base_width: int = 32
    depth: int = 2
    # s2d: channels and number of 3x3 convs at 14x14 (after a 2x pixel-unshuffle), and channels of
    # the thin full-resolution path that joins the shuffled-up features before the output convs.
    lowres_width: int = 32
    lowres_convs: int = 6
    fullres_width: int = 8
    # s2d: 0, or the channels of a 7x7 level between the first half of the 14x14 convs and the
    # rest: a strided conv down, `deep_convs` 3x3 convs, a 1x1 conv and a pixel-shuffle back up,
    # added to the 14x14 features. Twice the context of the 14x14 convs for little cost.
    deep_width: int = 0
    deep_convs: int = 2
    # s2d: give the 14x14 convs the image's estimated noise level as a fifth input channel
    # (Immerkær's estimator, computed in the graph: a fixed 3x3 conv and a mean), so that a blind
    # denoiser need not infer the level from its own features.
    noise_input: bool = False
    # s2d without a 7x7 level: the dilation of each of the `lowres_convs` 14x14 convs (empty: all
    # 1). A dilated 3x3 conv costs the FLOPs of a plain one and spreads its taps, so (1, 2, 4, 2, 1,
    # 1) widens the context each feature draws on (the job of the U-Net's 7x7 level) for free.
    lowres_dilations: tuple[int, ...] = ()
    norm: Literal["none", "batch"] = "none"
    # "glorot": Keras' default (Glorot-uniform weights, zero bias), which the lesson relies on;
    # "default": PyTorch's own (Kaiming-uniform), better suited to ReLU stacks with BatchNorm.
    init: Literal["glorot", "default"] = "glorot"

    @property
    def code_shape(self) -> tuple[int, ...] | None:
        """Shape of one code, or None for `unet` and `s2d` (no bottleneck)."""
        if self.arch == "dense":
            return (self.hidden,)
        if self.arch in ("conv", "denoise"):
            side = IMAGE_SIDE
            for _ in self.encoder_widths:
                side = math.ceil(side / 2)
            return (self.code_channels or self.encoder_widths[-1], side, side)
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; JSON turns tuples into lists, so turn them back."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


# The reference lesson's networks, exactly (docs/evaluation/README.md: the lesson's denoiser).
LESSON_PRESETS: dict[str, ModelConfig] = {
    "dense": ModelConfig(arch="dense", hidden=32),
    "conv": ModelConfig(arch="conv", encoder_widths=(16, 8, 8), decoder_widths=(8, 8, 16)),
    "denoise": ModelConfig(arch="denoise", encoder_widths=(32, 32, 16), decoder_widths=(16, 32, 32)),
}

# What we ship. `denoise` keeps the 16x4x4 code but is wider and deeper where it is cheap (at 14x14
# and 7x7), with BatchNorm so the deeper stack trains quickly; `unet` has no bottleneck at all.
SHIPPED_PRESETS: dict[str, ModelConfig] = {
    "dense": LESSON_PRESETS["dense"],
    "conv": LESSON_PRESETS["conv"],
    "denoise": ModelConfig(
        arch="denoise",
        encoder_widths=(32, 48, 48),
        code_channels=16,
        decoder_stem=48,
        decoder_widths=(56, 48, 32),
        norm="batch",
        init="default",
    ),
    "unet": ModelConfig(arch="unet", base_width=20, depth=2, norm="batch", init="default"),
    "s2d": ModelConfig(
        arch="s2d", lowres_width=32, lowres_convs=6, fullres_width=8, norm="batch", init="default"
    ),
}


def preset(arch: Arch, lesson: bool = False) -> ModelConfig:
    """The lesson's exact network (`lesson=True`, not defined for unet) or the shipped one."""
    table = LESSON_PRESETS if lesson else SHIPPED_PRESETS
    if arch not in table:
        raise ValueError(f"no {'lesson' if lesson else 'shipped'} preset for arch {arch!r}")
    return table[arch]


def _conv_block(c_in: int, c_out: int, norm: str, dilation: int = 1) -> list[nn.Module]:
    if norm == "batch":
        conv = nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False)
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]
    return [nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation), nn.ReLU()]


def _stage(c_in: int, c_out: int, n: int, norm: str, dilations: tuple[int, ...] = ()) -> list[nn.Module]:
    """`n` conv blocks from c_in to c_out; the i-th 3x3 conv has dilation ``dilations[i]`` (default 1)."""
    layers: list[nn.Module] = []
    for i in range(n):
        d = dilations[i] if dilations else 1
        layers += _conv_block(c_in if i == 0 else c_out, c_out, norm, d)
    return layers


class DenseEncoder(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(IMAGE_SIDE * IMAGE_SIDE, hidden)

    def forward(self, image: Tensor) -> Tensor:
        return F.relu(self.fc(image.flatten(1)))


class DenseDecoder(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, IMAGE_SIDE * IMAGE_SIDE)

    def logits(self, code: Tensor) -> Tensor:
        return self.fc(code).view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)

    def forward(self, code: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(code))


class ConvEncoder(nn.Module):
    """Conv stages, each followed by a 2x2 max-pool; 'same' pooling (ceil) takes 7 to 4."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for width, n in zip(cfg.encoder_widths, cfg.encoder_convs, strict=True):
            layers += _stage(c_in, width, n, cfg.norm)
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in = width
        if cfg.code_channels is not None:
            layers.append(nn.Conv2d(c_in, cfg.code_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)


class ConvDecoder(nn.Module):
    """Nearest resize to 7, 14, 28 with conv stages after each, then a 3x3 conv to one logit map."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.code_channels or cfg.encoder_widths[-1]
        if cfg.decoder_stem is not None:
            layers += _conv_block(c_in, cfg.decoder_stem, cfg.norm)
            c_in = cfg.decoder_stem
        for size, width, n in zip(DECODER_SIZES, cfg.decoder_widths, cfg.decoder_convs, strict=True):
            layers.append(nn.Upsample(size=(size, size), mode="nearest"))
            layers += _stage(c_in, width, n, cfg.norm)
            c_in = width
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def logits(self, code: Tensor) -> Tensor:
        return self.net(code)

    def forward(self, code: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(code))


class Autoencoder(nn.Module):
    """Encoder + decoder; `forward` is the whole denoiser, `logits` what the loss sees."""

    outputs_logits = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder: DenseEncoder | ConvEncoder
        self.decoder: DenseDecoder | ConvDecoder
        if cfg.arch == "dense":
            self.encoder, self.decoder = DenseEncoder(cfg.hidden), DenseDecoder(cfg.hidden)
        else:
            stages = (cfg.encoder_widths, cfg.encoder_convs, cfg.decoder_widths, cfg.decoder_convs)
            if any(len(s) != len(DECODER_SIZES) for s in stages):
                raise ValueError("conv/denoise need three encoder and three decoder stages")
            self.encoder, self.decoder = ConvEncoder(cfg), ConvDecoder(cfg)

    def raw(self, image: Tensor) -> Tensor:
        return self.decoder.logits(self.encoder(image))

    def forward(self, image: Tensor) -> Tensor:
        return self.decoder(self.encoder(image))


class UNet(nn.Module):
    """A small U-Net that predicts the noise and subtracts it (residual learning, as in DnCNN).

    No bottleneck: skip connections carry full-resolution detail, which is what lets it beat
    NL-means at low noise where any 256-number code cannot.
    """

    outputs_logits = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        widths = [cfg.base_width * 2**i for i in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        c_in = 1
        for width in widths:
            self.down.append(nn.Sequential(*_stage(c_in, width, 2, cfg.norm)))
            c_in = width
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.Sequential(*_stage(c_in + width, width, 2, cfg.norm)))
            c_in = width
        self.head = nn.Conv2d(c_in, 1, 3, padding=1)

    def noise(self, image: Tensor) -> Tensor:
        skips: list[Tensor] = []
        h = image
        for i, block in enumerate(self.down):
            if i > 0:
                h = self.pool(h)
            h = block(h)
            skips.append(h)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return self.head(h)

    def raw(self, image: Tensor) -> Tensor:
        # Unclamped, so the loss still has a gradient where the estimate leaves [0, 1].
        return image - self.noise(image)

    def forward(self, image: Tensor) -> Tensor:
        return torch.clamp(self.raw(image), 0.0, 1.0)


class S2DNet(nn.Module):
    """A residual denoiser built for the CPU: most of its work at 14x14, a thin path at 28x28.

    A 2x pixel-unshuffle turns the image into 4 channels at 14x14, where `lowres_convs` 3x3 convs
    of `lowres_width` channels do the heavy lifting at a quarter of the full-resolution cost; a
    pixel-shuffle brings `fullres_width` channels back to 28x28, where one 3x3 conv of the input
    (the full-resolution path) joins them before two output convs that predict the noise. The
    output is the image minus that noise, as in the U-Net. With `fullres_width` 0 there is no 28x28
    path: the last 14x14 conv predicts the noise of each 2x2 block directly (FFDNet's layout).
    """

    outputs_logits = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        if cfg.lowres_convs < 1:
            raise ValueError("s2d needs at least one low-resolution conv")
        if cfg.fullres_width < 0:
            raise ValueError("s2d's fullres_width is a channel count, or 0 for no 28x28 path")
        if cfg.lowres_dilations and (
            cfg.deep_width or len(cfg.lowres_dilations) != cfg.lowres_convs or min(cfg.lowres_dilations) < 1
        ):
            raise ValueError(
                "s2d's lowres_dilations needs one dilation >= 1 per 14x14 conv, and no 7x7 level"
            )
        f, width = cfg.fullres_width, cfg.lowres_width
        self.lowres_in: nn.Sequential | None = None
        self.deep: nn.Sequential | None = None
        c_first = 4 + int(cfg.noise_input)  # the unshuffled image, and the noise estimate
        convs, c_in = cfg.lowres_convs, c_first
        if cfg.noise_input:
            # Immerkær (1996): |response| of this kernel averages 6·sqrt(2/pi)·s for white noise of std s.
            kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
            self.register_buffer("immerkaer", (kernel * math.sqrt(math.pi / 2) / 6).view(1, 1, 3, 3))
        if cfg.deep_width:
            if cfg.lowres_convs < 2 or cfg.deep_convs < 1:
                raise ValueError("s2d with a 7x7 level needs at least two 14x14 convs and one 7x7 conv")
            self.lowres_in = nn.Sequential(*_stage(c_first, width, cfg.lowres_convs // 2, cfg.norm))
            # Down: a strided 3x3 conv; up: a 1x1 conv to 4x the channels and a pixel-shuffle (a
            # learned 2x2 transposed conv). Both are cheap next to the 14x14 convs.
            down = nn.Conv2d(width, cfg.deep_width, 3, stride=2, padding=1, bias=cfg.norm != "batch")
            self.deep = nn.Sequential(
                down,
                *([nn.BatchNorm2d(cfg.deep_width)] if cfg.norm == "batch" else []),
                nn.ReLU(),
                *_stage(cfg.deep_width, cfg.deep_width, cfg.deep_convs, cfg.norm),
                nn.Conv2d(cfg.deep_width, 4 * width, 1),
            )
            convs, c_in = cfg.lowres_convs - cfg.lowres_convs // 2, width
        # fullres_width 0: no 28x28 path; the last 14x14 conv predicts the noise of each 2x2 block
        # of pixels (4 channels) and the pixel-shuffle puts it in place, as FFDNet does.
        self.lowres = nn.Sequential(
            *_stage(c_in, width, convs, cfg.norm, cfg.lowres_dilations),
            nn.Conv2d(width, 4 * f if f else 4, 3, padding=1),
        )
        self.fullres: nn.Sequential | None = None
        self.head: nn.Sequential | None = None
        if f:
            self.fullres = nn.Sequential(nn.Conv2d(1, f, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(*_conv_block(2 * f, f, cfg.norm), nn.Conv2d(f, 1, 3, padding=1))

    def noise(self, image: Tensor) -> Tensor:
        h = F.pixel_unshuffle(image, 2)
        if self.config.noise_input:
            kernel = self.get_buffer("immerkaer")
            sigma = F.conv2d(image, kernel).abs().mean(dim=(1, 2, 3), keepdim=True)
            h = torch.cat([h, sigma.expand(-1, 1, h.shape[2], h.shape[3])], dim=1)
        if self.lowres_in is not None and self.deep is not None:
            h = self.lowres_in(h)
            h = h + F.pixel_shuffle(self.deep(h), 2)
        low = F.pixel_shuffle(self.lowres(h), 2)
        if self.fullres is None or self.head is None:
            return low
        return self.head(torch.cat([self.fullres(image), low], dim=1))

    def raw(self, image: Tensor) -> Tensor:
        return image - self.noise(image)

    def forward(self, image: Tensor) -> Tensor:
        return torch.clamp(self.raw(image), 0.0, 1.0)


Model = Autoencoder | UNet | S2DNet


def _glorot_init(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases (the lesson's networks rely on them)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_model(cfg: ModelConfig) -> Model:
    """The network that `cfg` describes, freshly initialised from torch's global RNG."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown arch {cfg.arch!r}; expected one of {ARCHS}")
    model: Model
    if cfg.arch == "unet":
        model = UNet(cfg)
    elif cfg.arch == "s2d":
        model = S2DNet(cfg)
    else:
        model = Autoencoder(cfg)
    code = cfg.code_shape
    if code is not None and math.prod(code) > MAX_CODE_NUMBERS:
        raise ValueError(f"code {code} has {math.prod(code)} numbers; at most {MAX_CODE_NUMBERS}")
    if cfg.init == "glorot":
        _glorot_init(model)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "ARCHS",
    "CODELESS",
    "LESSON_PRESETS",
    "MAX_CODE_NUMBERS",
    "SHIPPED_PRESETS",
    "Arch",
    "Autoencoder",
    "Model",
    "ModelConfig",
    "S2DNet",
    "UNet",
    "build_model",
    "count_parameters",
    "preset",
]
