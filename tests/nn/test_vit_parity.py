"""DinoViT against transformers' Dinov2Model / Dinov2WithRegistersModel (float32, CPU).

Each case builds a tiny random HF model, writes it with ``save_pretrained`` and reads it
back with ``load_dinov2`` (so the importer is tested too), then compares
``last_hidden_state``, ``pooler_output`` and every hidden state to <= 1e-5 on inputs
at the pre-training grid and on square and non-square grids that force the
position-embedding interpolation (plain bicubic without registers, antialiased bicubic
with them).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gshead_jax.convert import load_dinov2  # noqa: E402
from gshead_jax.nn.vit import DinoViT, intermediate_feature_maps  # noqa: E402

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("float32_matmuls")


# name: (use_swiglu_ffn, registers, input sizes). Pre-training grid: 56 px / 14 = 4x4.
CASES = {
    "gelu": (False, 0, [(56, 56), (42, 70)]),
    "swiglu": (True, 0, [(84, 84), (70, 28)]),
    "gelu-reg": (False, 3, [(42, 70), (84, 84)]),
    "swiglu-reg": (True, 2, [(56, 56), (28, 98)]),
}


def make_hf_model(swiglu: bool, registers: int, seed: int):
    """A tiny random HF DINOv2, with every vector parameter perturbed so that LayerNorm
    affines, LayerScale, biases and tokens all matter."""
    torch.manual_seed(seed)
    kw = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        use_swiglu_ffn=swiglu,
        layerscale_value=0.7,
        layer_norm_eps=1e-5,
    )
    if registers:
        cfg = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw)
        model = transformers.Dinov2WithRegistersModel(cfg)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "token" in name or "position" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for i, (name, (swiglu, regs, _)) in enumerate(CASES.items()):
        hf = make_hf_model(swiglu, regs, seed=i)
        path = tmp_path_factory.mktemp(name)
        hf.save_pretrained(path)
        config, params = load_dinov2(path)
        out[name] = (hf, config, params)
    return out


def _hf_forward(hf, x_nhwc, **kw):
    with torch.no_grad():
        return hf(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)), **kw)


def _max_err(a, b) -> float:
    a, b = np.asarray(a), b.detach().numpy()
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers(models, case):
    hf, config, params = models[case]
    assert config.num_register_tokens == CASES[case][1]
    assert config.mlp_kind == ("swiglu" if CASES[case][0] else "mlp")
    model = DinoViT(config)
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x, output_hidden_states=True))
    rng = np.random.default_rng(0)
    for h, w in CASES[case][2]:
        x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        ref = _hf_forward(hf, x, output_hidden_states=True)
        got = fwd(params, jnp.asarray(x))
        assert got.last_hidden_state.shape == (2, 1 + config.num_register_tokens + h * w // 196, 32)
        assert _max_err(got.last_hidden_state, ref.last_hidden_state) <= TOL
        assert _max_err(got.pooler_output, ref.pooler_output) <= TOL
        assert len(got.hidden_states) == len(ref.hidden_states) == config.num_layers + 1
        for a, b in zip(got.hidden_states, ref.hidden_states, strict=True):
            assert _max_err(a, b) <= TOL


def test_mask_token_matches_transformers(models):
    hf, config, params = models["gelu"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 42, 70, 3)).astype(np.float32)
    mask = rng.random((2, 15)) < 0.5
    with torch.no_grad():
        ref = hf(torch.from_numpy(x.transpose(0, 3, 1, 2)), bool_masked_pos=torch.from_numpy(mask))
    got = jax.jit(lambda p, x, m: DinoViT(config).apply({"params": p}, x, bool_masked_pos=m))(
        params, jnp.asarray(x), jnp.asarray(mask)
    )
    assert _max_err(got.last_hidden_state, ref.last_hidden_state) <= TOL
    unmasked = jax.jit(lambda p, x: DinoViT(config).apply({"params": p}, x))(params, x)
    # The mask must change the masked tokens' outputs (the test would pass vacuously otherwise).
    assert float(jnp.abs(unmasked.last_hidden_state - got.last_hidden_state).max()) > 1e-2


def test_intermediate_feature_maps_match_normed_hidden_states(models):
    """DINOv2 get_intermediate_layers(x, k, reshape=True, norm=True), channels last."""
    hf, config, params = models["gelu-reg"]
    x = np.random.default_rng(2).standard_normal((2, 42, 70, 3)).astype(np.float32)
    ref = _hf_forward(hf, x, output_hidden_states=True)
    k, r = 2, config.num_register_tokens
    got = jax.jit(
        lambda p, x: intermediate_feature_maps(DinoViT(config), p, x, k, return_class_token=True)
    )(params, jnp.asarray(x))
    assert len(got) == k
    for (fmap, cls), hidden in zip(got, ref.hidden_states[-k:], strict=True):
        with torch.no_grad():
            normed = hf.layernorm(hidden)
        want = normed[:, 1 + r :].reshape(2, 3, 5, 32)  # row-major 3 x 5 patch grid
        assert fmap.shape == (2, 3, 5, 32)
        assert _max_err(fmap, want) <= TOL
        assert _max_err(cls, normed[:, 0]) <= TOL
