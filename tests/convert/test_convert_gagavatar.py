"""GAGAvatar checkpoint import: every official tensor maps, nothing else is accepted.

The tensor names and shapes come from the official modules at paper size
(tests/fixtures/gagavatar/gagavatar_keys.json, written by
experiments/make_gagavatar_fixtures.py); values are checked module by module in
tests/nn/test_nn_{dpt,gaussian_heads,styleunet}.py.
"""

import json
import pathlib

import numpy as np
import pytest

from gshead_jax.convert import dinov2
from gshead_jax.convert.gagavatar import (
    GAGAvatarWeights,
    convert_gagavatar_state_dict,
    load_gagavatar_state_dict,
)
from gshead_jax.convert.mapping import CheckpointMismatchError
from gshead_jax.nn.vit_config import ViTConfig

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "gagavatar"
KEYS = json.loads((FIXTURES / "gagavatar_keys.json").read_text())
# A value per part, so the test sees that each part lands in its own field.
PART_VALUE = {
    "base_model.": 1.0,
    "gs_generator_g.": 2.0,
    "gs_generator_l0.": 3.0,
    "gs_generator_l1.": 4.0,
    "upsampler.": 5.0,
    "head_base": 6.0,
}


def _const(shape, value):
    # Zero-stride arrays: the 82M-value checkpoint costs no memory until converted.
    return np.broadcast_to(np.float32(value), tuple(shape))


def _official_state_dict():
    return {
        k: _const(s, next(v for p, v in PART_VALUE.items() if k.startswith(p)))
        for k, s in KEYS.items()
    }


def _tiny_dino_tensors():
    # A one-block torch-hub DINOv2 at a known width (the hub importer infers heads from it).
    config = ViTConfig(hidden_size=384, num_layers=1, num_heads=6, patch_size=14, image_size=28)
    plan = dinov2.dinov2_plan(config, "hub")
    return {n: _const(s, 0.5) for e in plan for n, s in zip(e.sources, e.shapes)}


def test_full_checkpoint_maps_every_tensor():
    sd = _official_state_dict()
    sd.update({"base_model.dino_model." + k: v for k, v in _tiny_dino_tensors().items()})
    sd["percep_loss.vggface.conv1.weight"] = _const((2, 2), 0.0)  # training-only loss net
    w = convert_gagavatar_state_dict(sd)
    assert isinstance(w, GAGAvatarWeights)
    # Skipped: exactly the never-called tensors and the loss network, all reported.
    want_skipped = sorted(
        k
        for k in KEYS
        if k.startswith(("base_model.refinenet.0.resConfUnit1.", "upsampler.toRGB."))
    ) + ["percep_loss.vggface.conv1.weight"]
    assert list(w.skipped) == sorted(want_skipped)
    # Every value converted: the checkpoint minus the skipped tensors.
    n_values = sum(int(np.prod(s)) for k, s in KEYS.items() if k not in set(w.skipped))
    fields = [w.dpt, w.gs_generator_g, w.gs_generator_l0, w.gs_generator_l1, w.upsampler]
    got = sum(a.size for f in fields for col in f.values() for a in _leaves(col))
    assert got + w.head_base.size == n_values
    for field, prefix in zip(fields, list(PART_VALUE)[:5]):
        vals = {float(np.unique(a)[0]) for col in field.values() for a in _leaves(col)}
        assert vals == {PART_VALUE[prefix]}, prefix
    assert w.head_base.shape == (5023, 256) and np.all(w.head_base == 6.0)
    assert (
        set(w.upsampler) == {"params", "buffers"}
        and len(w.upsampler["buffers"]["stylegan_decoder"]["noises"]) == 15
    )
    config, params = w.dino
    assert (config.hidden_size, config.num_layers, config.patch_size) == (384, 1, 14)
    assert params["blocks_0"]["attn"]["qkv"]["kernel"].shape == (384, 1152)


def test_checkpoint_without_dino_gives_none():
    w = convert_gagavatar_state_dict(_official_state_dict())
    assert w.dino is None


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield np.asarray(tree)


def test_refuses_unmapped_missing_and_misshaped_tensors_with_names():
    sd = _official_state_dict()
    sd["decoder.extra.weight"] = _const((3,), 0.0)  # unknown top-level module
    del sd["head_base"]
    with pytest.raises(CheckpointMismatchError) as err:
        convert_gagavatar_state_dict(sd)
    assert err.value.unexpected == ["decoder.extra.weight"] and err.value.missing == ["head_base"]

    sd = _official_state_dict()
    sd["base_model.projects.4.weight"] = _const((8, 768, 1, 1), 0.0)  # inside a part
    del sd["base_model.output_conv.bias"]
    sd["base_model.layer_rn.2.weight"] = _const((256, 1024, 3, 3), 0.0)  # RGB channels lost
    with pytest.raises(CheckpointMismatchError) as err:
        convert_gagavatar_state_dict(sd)
    e = err.value
    assert e.unexpected == ["projects.4.weight"] and e.missing == ["output_conv.bias"]
    assert e.wrong_shapes == {"layer_rn.2.weight": ((256, 1024, 3, 3), (256, 1027, 3, 3))}
    assert "base_model." in str(e) and "projects.4.weight" in str(e)


def test_load_state_dict_from_torch_file(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {"head_base": torch.randn(3, 2), "upsampler.final_conv.bias": torch.randn(4)}
    torch.save({"model": sd, "meta_cfg": {"MODEL": {"NAME": "GAGAvatar"}}}, tmp_path / "g.pt")
    got = load_gagavatar_state_dict(tmp_path / "g.pt")
    assert set(got) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k].numpy())
    torch.save([1, 2], tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="expected"):
        load_gagavatar_state_dict(tmp_path / "bad.pt")
