"""load_dinov2 on every layout, refusal of incomplete checkpoints, own-format round trip.

Checkpoints are built in the test from a tiny random transformers model: the Hugging
Face files (``save_pretrained``), transformers 5's in-memory names (``state_dict()``),
a sharded folder, and torch-hub state dicts written by renaming the HF tensors here
(independently of the importer's plan) as ``.pth`` and ``.safetensors``.
"""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from gshead_jax.convert import (  # noqa: E402
    CheckpointMismatchError,
    convert_state_dict,
    load_dinov2,
    load_params,
    save_params,
)
from gshead_jax.convert.dinov2 import config_from_hf  # noqa: E402
from gshead_jax.convert.mapping import flatten  # noqa: E402
from gshead_jax.convert.safetensors_io import write_safetensors  # noqa: E402
from gshead_jax.nn.vit import DinoViT  # noqa: E402

D, L = 32, 2


def _hf(swiglu: bool, registers: int):
    torch.manual_seed(registers + 2 * swiglu)
    kw = dict(hidden_size=D, num_hidden_layers=L, num_attention_heads=2, image_size=56,
              patch_size=14, use_swiglu_ffn=swiglu)  # fmt: skip
    if registers:
        cfg = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw)
        model = transformers.Dinov2WithRegistersModel(cfg)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def hf_files_to_hub(sd: dict) -> dict:
    """HF checkpoint names (as save_pretrained writes them) -> torch-hub DINOv2 names."""
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "mask_token": sd["embeddings.mask_token"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    if "embeddings.register_tokens" in sd:
        out["register_tokens"] = sd["embeddings.register_tokens"]
    for i in range(L):
        s, t = f"encoder.layer.{i}.", f"blocks.{i}."
        att = s + "attention.attention."
        for kind in ("weight", "bias"):
            out[t + f"attn.qkv.{kind}"] = torch.cat(
                [sd[att + f"{q}.{kind}"] for q in ("query", "key", "value")], dim=0
            )
            out[t + f"attn.proj.{kind}"] = sd[s + f"attention.output.dense.{kind}"]
            for n in ("norm1", "norm2"):
                out[t + f"{n}.{kind}"] = sd[s + f"{n}.{kind}"]
            pairs = [("fc1", "fc1"), ("fc2", "fc2"), ("weights_in", "w12"), ("weights_out", "w3")]
            for hf_name, hub_name in pairs:
                if s + f"mlp.{hf_name}.{kind}" in sd:
                    out[t + f"mlp.{hub_name}.{kind}"] = sd[s + f"mlp.{hf_name}.{kind}"]
        out[t + "ls1.gamma"] = sd[s + "layer_scale1.lambda1"]
        out[t + "ls2.gamma"] = sd[s + "layer_scale2.lambda1"]
    return {k: v.clone() for k, v in out.items()}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    out = {}
    for name, (swiglu, regs) in {"gelu": (False, 0), "swiglu-reg": (True, 4)}.items():
        model = _hf(swiglu, regs)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (model, path)
    return out


def _files(path) -> dict:
    return safetensors_torch.load_file(str(path / "model.safetensors"))


def _assert_trees_equal(a, b):
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


@pytest.mark.parametrize("name", ["gelu", "swiglu-reg"])
def test_hub_state_dict_loads_like_hf(hf_dirs, tmp_path, name):
    model, path = hf_dirs[name]
    config, params = load_dinov2(path)
    hub = hf_files_to_hub(_files(path))
    torch.save(hub, tmp_path / "hub.pth")
    with pytest.raises(ValueError, match="num_heads"):  # width 32: heads not inferable
        load_dinov2(tmp_path / "hub.pth")
    hub_config, hub_params = load_dinov2(tmp_path / "hub.pth", num_heads=2)
    _assert_trees_equal(hub_params, params)
    regs = config.num_register_tokens
    # The hub's interpolation: antialiased without offset with registers, +0.1 without.
    assert (hub_config.interpolate_antialias, hub_config.interpolate_offset) == (
        (True, 0.0) if regs else (False, 0.1)
    )
    assert hub_config.image_size == 56 and hub_config.mlp_kind == config.mlp_kind
    # A block_chunks=1 layout (blocks.C.N.*, here C = 0), and the same names in a
    # .safetensors file (bfloat16, read without torch).
    chunked = {k.replace("blocks.", "blocks.0.", 1): v for k, v in hub.items()}
    torch.save(chunked, tmp_path / "chunked.pth")
    _, chunked_params = load_dinov2(tmp_path / "chunked.pth", num_heads=2)
    _assert_trees_equal(chunked_params, params)
    bf16 = {k: v.float().numpy().astype(ml_dtypes.bfloat16) for k, v in hub.items()}
    write_safetensors(tmp_path / "hub.safetensors", bf16)
    _, bf_params = load_dinov2(tmp_path / "hub.safetensors", num_heads=2)
    want = jax.tree_util.tree_map(lambda a: a.astype(ml_dtypes.bfloat16).astype(np.float32), params)
    _assert_trees_equal(bf_params, want)


def test_hub_interpolation_offset_matches_torch_hub_formula(hf_dirs, tmp_path):
    """dinov2/models/vision_transformer.py: F.interpolate(scale_factor=(h0+0.1)/M, bicubic)."""
    _, path = hf_dirs["gelu"]
    hub = hf_files_to_hub(_files(path))
    torch.save(hub, tmp_path / "hub.pth")
    config, params = load_dinov2(tmp_path / "hub.pth", num_heads=2)
    pos = hub["pos_embed"]
    m = math.isqrt(pos.shape[1] - 1)
    for h, w in [(3, 5), (6, 6), (7, 2)]:
        grid = pos[:, 1:].reshape(1, m, m, D).permute(0, 3, 1, 2)
        ref = torch.nn.functional.interpolate(
            grid, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic"
        )
        ref = torch.cat([pos[:, :1], ref.permute(0, 2, 3, 1).reshape(1, h * w, D)], dim=1)
        got = DinoViT(config).apply({"params": params}, h, w, method=DinoViT.position_embeddings)
        np.testing.assert_allclose(np.asarray(got), ref.numpy(), atol=1e-6, rtol=0)
        # ... which is not HF's size-based resize.
        hf_like = DinoViT(dataclasses.replace(config, interpolate_offset=0.0))
        other = hf_like.apply({"params": params}, h, w, method=DinoViT.position_embeddings)
        assert float(jnp.abs(other - got).max()) > 1e-4


def test_transformers5_state_dict_and_sharded_folder(hf_dirs, tmp_path):
    model, path = hf_dirs["swiglu-reg"]
    _, params = load_dinov2(path)
    # transformers 5's in-memory names (attention.q_proj, mlp.gate_proj/up_proj/down_proj).
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert any(".attention.q_proj." in k for k in sd) and any("gate_proj" in k for k in sd)
    (tmp_path / "v5").mkdir()
    (tmp_path / "v5" / "config.json").write_text((path / "config.json").read_text())
    safetensors_torch.save_file(sd, str(tmp_path / "v5" / "model.safetensors"))
    _, v5_params = load_dinov2(tmp_path / "v5")
    _assert_trees_equal(v5_params, params)
    # The same tensors straight from memory.
    config = config_from_hf(json.loads((path / "config.json").read_text()))
    numpy_sd = {k: v.numpy() for k, v in sd.items()}
    _, mem_params = convert_state_dict(numpy_sd, config)
    _assert_trees_equal(mem_params, params)
    with pytest.raises(ValueError, match="need their config"):
        convert_state_dict(numpy_sd)
    # Hub files split over two shards with an index.
    files = _files(path)
    names = sorted(files)
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((path / "config.json").read_text())
    weight_map = {}
    for j, part in enumerate((names[::2], names[1::2])):
        fname = f"model-0000{j + 1}-of-00002.safetensors"
        safetensors_torch.save_file({n: files[n] for n in part}, str(shard_dir / fname))
        weight_map.update({n: fname for n in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _, sharded = load_dinov2(shard_dir)
    _assert_trees_equal(sharded, params)


def test_missing_extra_and_misshaped_tensors_are_refused_by_name(hf_dirs, tmp_path):
    model, path = hf_dirs["gelu"]
    files = _files(path)
    cfg_text = (path / "config.json").read_text()

    def write(tensors, sub):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text(cfg_text)
        safetensors_torch.save_file(tensors, str(tmp_path / sub / "model.safetensors"))
        return tmp_path / sub

    gone = "encoder.layer.1.layer_scale2.lambda1"
    with pytest.raises(CheckpointMismatchError, match=gone) as err:
        load_dinov2(write({k: v for k, v in files.items() if k != gone}, "missing"))
    assert err.value.missing == [gone] and not err.value.unexpected

    extra = {**files, "encoder.layer.0.extra.weight": torch.zeros(3), "pooler.bias": torch.zeros(2)}
    with pytest.raises(CheckpointMismatchError) as err:
        load_dinov2(write(extra, "extra"))
    assert err.value.unexpected == ["encoder.layer.0.extra.weight", "pooler.bias"]
    assert "pooler.bias" in str(err.value)

    bad = {**files, "embeddings.cls_token": torch.zeros(1, 1, D + 1)}
    with pytest.raises(CheckpointMismatchError, match="embeddings.cls_token") as err:
        load_dinov2(write(bad, "shape"))
    assert err.value.wrong_shapes == {"embeddings.cls_token": ((1, 1, D + 1), (1, 1, D))}

    hub = hf_files_to_hub(files)
    del hub["blocks.0.attn.qkv.bias"]  # inferred qkv_bias=False would hide it: force True
    hub["blocks.0.foo"] = torch.zeros(1)
    torch.save(hub, tmp_path / "hub.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_dinov2(tmp_path / "hub.pth", num_heads=2, qkv_bias=True)
    assert err.value.missing == ["blocks.0.attn.qkv.bias"]
    assert err.value.unexpected == ["blocks.0.foo"]


def test_hf_config_parsing_and_errors(hf_dirs):
    model, path = hf_dirs["swiglu-reg"]
    cfg = config_from_hf(json.loads((path / "config.json").read_text()))
    mlp = model.encoder.layer[0].mlp
    assert cfg.mlp_dim == mlp.gate_proj.out_features  # HF's SwiGLU rounding
    assert cfg.num_register_tokens == model.config.num_register_tokens == 4
    assert cfg.layer_norm_eps == model.config.layer_norm_eps
    with pytest.raises(ValueError, match="model_type"):
        config_from_hf({"model_type": "vit"})
    with pytest.raises(ValueError, match="image_size must be square"):
        config_from_hf({"model_type": "dinov2", "image_size": [224, 448]})


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_own_format_round_trip(hf_dirs, tmp_path, dtype):
    _, path = hf_dirs["swiglu-reg"]
    config, params = load_dinov2(path, dtype=dtype)
    assert all(a.dtype == dtype for a in jax.tree_util.tree_leaves(params))
    save_params(tmp_path / "out", config, params)
    config2, params2 = load_params(tmp_path / "out")
    assert config2 == config
    _assert_trees_equal(params2, params)
    assert all(a.dtype == dtype for a in jax.tree_util.tree_leaves(params2))
    broken = dict(params)
    del broken["norm"]
    with pytest.raises(CheckpointMismatchError, match="norm/scale"):
        save_params(tmp_path / "bad", config, broken)
