"""training.models: the lesson's networks exactly, the shipped ones within the code budget."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from training.config import default_config, default_description
from training.models import (
    ARCHS,
    CODELESS,
    LESSON_PRESETS,
    MAX_CODE_NUMBERS,
    SHIPPED_PRESETS,
    Autoencoder,
    ModelConfig,
    S2DNet,
    UNet,
    build_model,
    count_parameters,
    preset,
)

ALL_PRESETS = [(f"lesson-{k}", v) for k, v in LESSON_PRESETS.items()] + [
    (f"shipped-{k}", v) for k, v in SHIPPED_PRESETS.items()
]


def test_lesson_denoiser_has_the_lessons_parameter_count() -> None:
    model = build_model(preset("denoise", lesson=True))
    assert isinstance(model, Autoencoder)
    assert count_parameters(model) == 30_689
    assert count_parameters(model.encoder) == 14_192
    assert count_parameters(model.decoder) == 16_497


@pytest.mark.parametrize(
    ("arch", "code_shape"), [("dense", (32,)), ("conv", (8, 4, 4)), ("denoise", (16, 4, 4))]
)
def test_lesson_autoencoders_have_the_lessons_codes(arch: str, code_shape: tuple[int, ...]) -> None:
    model = build_model(preset(arch, lesson=True))  # type: ignore[arg-type]
    assert isinstance(model, Autoencoder)
    code = model.encoder(torch.rand(3, 1, 28, 28))
    assert tuple(code.shape) == (3, *code_shape)
    assert tuple(model.decoder(code).shape) == (3, 1, 28, 28)


def test_lesson_networks_use_keras_initialisation() -> None:
    torch.manual_seed(0)
    model = build_model(preset("denoise", lesson=True))
    first = model.encoder.net[0]
    assert isinstance(first, torch.nn.Conv2d)
    assert first.bias is not None and torch.count_nonzero(first.bias) == 0
    # Glorot-uniform bound for a 3x3 conv from 1 to 32 channels: sqrt(6 / (9 + 288)).
    bound = math.sqrt(6 / (9 * 1 + 9 * 32))
    assert first.weight.abs().max() <= bound
    assert first.weight.abs().max() > 0.9 * bound


@pytest.mark.parametrize(("name", "cfg"), ALL_PRESETS, ids=[n for n, _ in ALL_PRESETS])
def test_every_preset_maps_images_to_images_in_unit_range(name: str, cfg: ModelConfig) -> None:
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 1, 28, 28)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize(("name", "cfg"), ALL_PRESETS, ids=[n for n, _ in ALL_PRESETS])
def test_codes_fit_the_256_number_budget(name: str, cfg: ModelConfig) -> None:
    model = build_model(cfg)
    if cfg.arch in CODELESS:
        assert cfg.code_shape is None
        assert not hasattr(model, "encoder")
        return
    assert isinstance(model, Autoencoder)
    code = model.encoder(torch.rand(2, 1, 28, 28))
    assert cfg.code_shape is not None
    assert tuple(code.shape[1:]) == cfg.code_shape
    assert math.prod(cfg.code_shape) <= MAX_CODE_NUMBERS


def test_shipped_denoiser_keeps_the_16x4x4_code() -> None:
    assert preset("denoise").code_shape == (16, 4, 4)


def test_build_model_rejects_a_code_over_256_numbers() -> None:
    with pytest.raises(ValueError, match="at most 256"):
        build_model(ModelConfig(arch="denoise", encoder_widths=(32, 32, 32)))


def test_build_model_rejects_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        build_model(ModelConfig(arch="vae"))  # type: ignore[arg-type]


def test_lesson_has_no_unet() -> None:
    with pytest.raises(ValueError, match="no lesson preset"):
        preset("unet", lesson=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_config_survives_a_json_round_trip(arch: str) -> None:
    cfg = preset(arch)  # type: ignore[arg-type]
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_config_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"arch": "dense", "dropout": 0.5})


@pytest.mark.parametrize(
    "overrides",
    [
        {"fullres_width": 8},
        {"fullres_width": 12},
        {"deep_width": 16, "lowres_convs": 4},
        {"fullres_width": 0, "lowres_convs": 8},
        {"noise_input": True},
        {"noise_input": True, "deep_width": 16, "lowres_convs": 4},
        {"lowres_dilations": (1, 2, 4, 2, 1, 1)},
    ],
)
def test_s2d_subtracts_its_noise_estimate_and_clamps(overrides: dict[str, int]) -> None:
    model = build_model(replace(preset("s2d"), **overrides)).eval()
    assert isinstance(model, S2DNet)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        noise = model.noise(x)
        assert noise.shape == (2, 1, 28, 28)
        assert torch.equal(model(x), torch.clamp(x - noise, 0, 1))


def test_s2d_reaches_every_pixel_through_the_full_resolution_path() -> None:
    # A change to one pixel must move its own output even when the 14x14 branch is silenced:
    # the thin 28x28 path is what keeps single-pixel detail.
    model = build_model(preset("s2d")).eval()
    assert isinstance(model, S2DNet)
    with torch.no_grad():
        for p in model.lowres[-1].parameters():
            p.zero_()
        x = torch.zeros(1, 1, 28, 28)
        y = x.clone()
        y[0, 0, 13, 17] = 1.0
        diff = (model.noise(y) - model.noise(x)).abs()[0, 0]
    assert float(diff[13, 17]) > 0


def test_unet_subtracts_its_noise_estimate_and_clamps() -> None:
    model = build_model(preset("unet")).eval()
    assert isinstance(model, UNet)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = torch.clamp(x - model.noise(x), 0, 1)
        assert torch.equal(model(x), expected)


def test_the_s2d_7x7_level_widens_what_an_output_pixel_sees() -> None:
    # One input pixel changed at (4, 4): without the 7x7 level, 6 convs at 14x14 plus the 28x28
    # convs cannot reach (27, 27); through the 7x7 level's strided conv and two convs it can.
    # In float64: at initialisation what reaches (27, 27) is about 2e-9 of a pixel value, which
    # float32 keeps or rounds away depending on the CPU's convolution kernels.
    torch.manual_seed(1)
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64)  # not zeros: every ReLU passes something on
    y = x.clone()
    y[0, 0, 4, 4] += 1.0
    reach = {}
    for deep in (0, 16):
        torch.manual_seed(0)
        model = build_model(replace(preset("s2d"), deep_width=deep, deep_convs=2)).double().eval()
        with torch.no_grad():
            reach[deep] = float((model.noise(y) - model.noise(x)).abs()[0, 0, 27, 27])
    assert reach[0] == 0.0 and reach[16] > 0.0


def test_dilated_14x14_convs_reach_further_at_the_same_size() -> None:
    # Same parameters, so the same cost; but with dilations 1, 2, 4, 2, 1, 1 the six 14x14 convs
    # span 23 cells where plain ones span 13: a pixel at (0, 0) moves the output at (27, 27) only
    # through the dilated stack. Its config survives the card's JSON (a list) as a tuple.
    torch.manual_seed(1)
    x = torch.rand(1, 1, 28, 28)
    y = x.clone()
    y[0, 0, 0, 0] += 1.0
    reach, sizes = {}, {}
    for dilations in ((), (1, 2, 4, 2, 1, 1)):
        torch.manual_seed(0)
        cfg = replace(preset("s2d"), lowres_dilations=dilations)
        model = build_model(cfg).eval()
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        sizes[dilations] = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            reach[dilations] = float((model.noise(y) - model.noise(x)).abs()[0, 0, 27, 27])
    assert sizes[()] == sizes[(1, 2, 4, 2, 1, 1)]
    assert reach[()] == 0.0 and reach[(1, 2, 4, 2, 1, 1)] > 0.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"lowres_dilations": (1, 2, 4)},
        {"lowres_dilations": (1, 2, 0, 2, 1, 1)},
        {"lowres_dilations": (1, 2, 2, 1), "lowres_convs": 4, "deep_width": 16},
    ],
)
def test_s2d_refuses_dilations_that_do_not_fit_its_convs(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="lowres_dilations"):
        build_model(replace(preset("s2d"), **overrides))  # type: ignore[arg-type]


def test_s2d_refuses_a_7x7_level_without_14x14_convs_around_it() -> None:
    with pytest.raises(ValueError, match="7x7 level"):
        build_model(replace(preset("s2d"), deep_width=16, lowres_convs=1))


def test_an_s2d_without_a_28x28_path_predicts_each_2x2_block_from_14x14_features() -> None:
    # fullres_width 0: no conv runs at 28x28; the last 14x14 conv has 4 outputs, one per pixel of
    # its 2x2 block, so a pixel's noise estimate is exactly that channel shuffled into place.
    model = build_model(replace(preset("s2d"), fullres_width=0, lowres_convs=8)).eval()
    assert isinstance(model, S2DNet) and model.fullres is None and model.head is None
    assert all(m.in_channels != 1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        blocks = model.lowres(torch.nn.functional.pixel_unshuffle(x, 2))
        assert blocks.shape == (1, 4, 14, 14)
        noise = model.noise(x)
    assert torch.equal(noise[0, 0, 1::2, 0::2], blocks[0, 2])
    assert default_description(default_config("s2d", "mnist5k", False), model.config).startswith(
        "Space-to-depth residual denoiser working at 14x14 only (no code)"
    )


def test_s2d_refuses_a_negative_full_resolution_width() -> None:
    with pytest.raises(ValueError, match="fullres_width"):
        build_model(replace(preset("s2d"), fullres_width=-1))


def test_s2d_noise_input_is_the_immerkaer_estimate_the_scores_use() -> None:
    """``noise_input``: a fifth 14x14 channel holding ``contract.ood.noise_estimate`` of the image."""
    from contract.ood import noise_estimate

    model = build_model(replace(preset("s2d"), noise_input=True)).eval()
    assert isinstance(model, S2DNet)
    seen: list[torch.Tensor] = []
    first = next(m for m in model.lowres.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 5
    first.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    gen = torch.Generator().manual_seed(0)
    x = torch.clamp(
        0.5 + torch.randn(3, 1, 28, 28, generator=gen) * torch.tensor([0.0, 0.1, 0.3]).view(3, 1, 1, 1), 0, 1
    )
    with torch.no_grad():
        model(x)
    (h,) = seen
    assert h.shape == (3, 5, 14, 14)
    assert torch.equal(h[:, :4], torch.nn.functional.pixel_unshuffle(x, 2))
    expected = torch.from_numpy(noise_estimate(x.numpy())).float()
    assert torch.allclose(h[:, 4, 0, 0], expected, atol=1e-6)
    assert (h[:, 4] == h[:, 4, :1, :1]).all()  # one number per image, over the whole 14x14 plane
    assert h[0, 4, 0, 0] == 0 and h[1, 4, 0, 0] < h[2, 4, 0, 0]
