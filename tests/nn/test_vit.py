"""DinoViT options (bf16, remat, attention backends), input checks and the variant table."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax.nn.vit import DinoViT, attention_implementation
from gshead_jax.nn.vit_config import VARIANTS, ViTConfig, vit_config

pytestmark = pytest.mark.usefixtures("float32_matmuls")


@pytest.fixture(scope="module")
def tiny():
    config = vit_config("tiny", num_register_tokens=2)
    params = jax.jit(DinoViT(config).init)(jax.random.key(0), jnp.zeros((1, 56, 56, 3)))
    x = jax.random.normal(jax.random.key(1), (2, 42, 70, 3))
    return config, params["params"], x


def test_bf16_compute_within_2e_2_of_float32():
    config = vit_config("tiny")
    params = jax.jit(DinoViT(config).init)(jax.random.key(0), jnp.zeros((1, 56, 56, 3)))["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))

    def run(dtype):
        model = DinoViT(config, dtype=dtype)
        qkv_only = lambda mdl, _: mdl.name == "qkv"  # noqa: E731
        return jax.jit(lambda p, x: model.apply({"params": p}, x, capture_intermediates=qkv_only))

    f32, bf16 = run(jnp.float32), run(jnp.bfloat16)
    for seed in range(3):
        x = jax.random.normal(jax.random.key(seed), (2, 42, 70, 3))
        (a, _), (b, inter) = f32(params, x), bf16(params, x)
        for u, v in [
            (a.last_hidden_state, b.last_hidden_state),
            (a.pooler_output, b.pooler_output),
        ]:
            assert v.dtype == jnp.float32  # float32 stream and outputs, bf16 matmuls
            err = float(jnp.abs(u - v).max())
            assert 0 < err <= 2e-2
    # Half precision really reaches the matmuls: the qkv projection output is bf16.
    qkv = inter["intermediates"]["blocks_0"]["attn"]["qkv"]["__call__"]
    assert qkv[0].dtype == jnp.bfloat16


def test_remat_gives_same_values_and_gradients(tiny):
    config, params, x = tiny

    def loss(model):
        return lambda p: jnp.sum(model.apply({"params": p}, x).last_hidden_state ** 2)

    g0 = jax.jit(jax.value_and_grad(loss(DinoViT(config))))(params)
    g1 = jax.jit(jax.value_and_grad(loss(DinoViT(config, remat=True))))(params)
    np.testing.assert_allclose(g1[0], g0[0], rtol=1e-6)
    for a, b in zip(
        jax.tree_util.tree_leaves(g1[1]), jax.tree_util.tree_leaves(g0[1]), strict=True
    ):
        # Recomputation reorders float32 sums: agree to float32 rounding of the largest entry.
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * (1 + float(jnp.abs(b).max())))


def test_xla_attention_matches_dense_softmax(tiny):
    """The attention module against a softmax(q k^T / sqrt(d)) v written here."""
    config, params, x = tiny
    from gshead_jax.nn.vit import Attention

    p = params["blocks_0"]["attn"]
    t = jax.random.normal(jax.random.key(2), (2, 7, config.hidden_size))
    got = jax.jit(lambda p, t: Attention(config, attention="xla").apply({"params": p}, t))(p, t)
    qkv = t @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    q, k, v = (qkv[..., i * 32 : (i + 1) * 32].reshape(2, 7, 2, 16) for i in range(3))
    w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / 4.0, axis=-1)
    want = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(2, 7, 32) @ p["proj"]["kernel"]
    np.testing.assert_allclose(got, want + p["proj"]["bias"], atol=1e-5)


def test_attention_backend_selection():
    assert attention_implementation("xla", jnp.bfloat16, 64) == "xla"
    assert attention_implementation("cudnn", jnp.float32, 64) == "cudnn"
    # float32 or an unsupported head size never goes to cuDNN.
    assert attention_implementation("auto", jnp.float32, 64) == "xla"
    assert attention_implementation("auto", jnp.bfloat16, 100) == "xla"
    on_gpu = jax.default_backend() == "gpu"
    assert attention_implementation("auto", jnp.bfloat16, 64) == ("cudnn" if on_gpu else "xla")
    with pytest.raises(ValueError, match="attention"):
        attention_implementation("flash", jnp.bfloat16, 64)


def test_bad_inputs_are_refused_by_name(tiny):
    config, _, _ = tiny
    model = DinoViT(config)
    # Only shapes are needed: the checks run while tracing.
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 56, 56, 3))))
    params = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), params["params"])
    with pytest.raises(ValueError, match="NHWC"):
        model.apply({"params": params}, jnp.zeros((1, 3, 56, 56)))
    with pytest.raises(ValueError, match="multiples of patch_size=14"):
        model.apply({"params": params}, jnp.zeros((1, 56, 50, 3)))
    with pytest.raises(TypeError, match="floating"):
        model.apply({"params": params}, jnp.zeros((1, 56, 56, 3), jnp.uint8))
    with pytest.raises(ValueError, match="bool_masked_pos"):
        model.apply(
            {"params": params}, jnp.zeros((1, 56, 56, 3)), bool_masked_pos=jnp.zeros((1, 15))
        )
    with pytest.raises(ValueError, match="k must be in"):
        model.apply(
            {"params": params},
            jnp.zeros((1, 56, 56, 3)),
            3,
            method=DinoViT.intermediate_feature_maps,
        )
    with pytest.raises(ValueError, match="divisible"):
        ViTConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown ViT variant"):
        vit_config("H/14")


def test_variant_table_matches_transformers_and_nominal_sizes():
    """MLP widths against transformers' own modules (built on the meta device, no
    memory), parameter counts against the published sizes."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.dinov2 import modeling_dinov2 as hf

    # Published sizes: DINOv2 S/B/L/g 21M/86M/300M/1.1B, WebSSL 0.3B ... 7B.
    nominal = {"S/14": 21e6, "B/14": 86e6, "L/14": 300e6, "g/14": 1.1e9, "webssl-300m": 0.3e9,
               "webssl-1b": 1.1e9, "webssl-2b": 2e9, "webssl-3b": 3e9, "webssl-5b": 5e9,
               "webssl-7b": 7e9}  # fmt: skip
    for name, cfg in VARIANTS.items():
        hf_cfg = transformers.Dinov2Config(
            hidden_size=cfg.hidden_size,
            num_attention_heads=cfg.num_heads,
            mlp_ratio=int(cfg.mlp_ratio),
            use_swiglu_ffn=cfg.mlp_kind == "swiglu",
        )
        with torch.device("meta"):
            mlp = hf.Dinov2SwiGLUFFN(hf_cfg) if cfg.mlp_kind == "swiglu" else hf.Dinov2MLP(hf_cfg)
        hidden = mlp.gate_proj.out_features if cfg.mlp_kind == "swiglu" else mlp.fc1.out_features
        assert cfg.mlp_dim == hidden, name
        if name in nominal:
            d, f, n = cfg.hidden_size, cfg.mlp_dim, cfg.num_layers
            ffn = 3 * d * f if cfg.mlp_kind == "swiglu" else 2 * d * f
            count = n * (4 * d * d + ffn)
            assert abs(count / nominal[name] - 1) < 0.12, (name, count)
    # Exact count of the module tree for one model: the formula above is the module's.
    cfg = vit_config("B/14")
    shapes = jax.eval_shape(
        lambda: DinoViT(cfg).init(jax.random.key(0), jnp.zeros((1, 518, 518, 3)))
    )
    total = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))
    assert total == 86_580_480  # facebook/dinov2-base: 86.58M parameters (HF model card)
    assert dataclasses.replace(cfg, image_size=224).grid_size == 16


@pytest.mark.gpu
def test_cudnn_attention_matches_xla_on_gpu():
    """bf16 B/14-shaped blocks at 518^2: cuDNN flash attention against XLA's attention."""
    cfg = vit_config("B/14", num_layers=2)
    x = jax.random.normal(jax.random.key(0), (2, 518, 518, 3))
    params = DinoViT(cfg).init(jax.random.key(1), x[:1])["params"]
    outs = {}
    for impl in ("xla", "cudnn"):
        model = DinoViT(cfg, dtype=jnp.bfloat16, attention=impl)
        outs[impl] = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x))(params, x)
    err = float(jnp.abs(outs["xla"].last_hidden_state - outs["cudnn"].last_hidden_state).max())
    assert err <= 5e-2
