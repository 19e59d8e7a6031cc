"""StyleUNet against the official module (fixtures), its published size, noise modes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gagavatar_testing import FIXTURES, load_fixture

from gshead_jax.convert.gagavatar import convert_module_state_dict
from gshead_jax.nn.styleunet import StyleUNet, make_styleunet

pytestmark = pytest.mark.usefixtures("float32_matmuls")


def _random_variables(net, x):
    """Seeded NumPy values on ``net``'s variable shapes: no init compile (threefry is
    slow to compile on CPU). Noise strengths start at 0, like the official init."""
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x, noise_mode="none"))
    rng = np.random.default_rng(0)

    def fill(path, s):
        name = jax.tree_util.keystr(path)
        if s.shape == (1,):
            return np.zeros(s.shape, np.float32)
        a = rng.standard_normal(s.shape).astype(np.float32)
        if "buffers" in name or "constant_input" in name:
            return a
        if name.endswith("['bias']"):
            return 0.1 * a + (1.0 if "modulation" in name else 0.0)
        return a / np.sqrt(np.prod(s.shape[:-1]))

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("name", ["styleunet.npz", "styleunet_down.npz"])
def test_styleunet_matches_official(name):
    # Official run with randomize_noise=False, i.e. the stored noise buffers.
    meta, arrays, sd = load_fixture(name)
    net = StyleUNet(**meta["args"])
    variables, skipped = convert_module_state_dict(sd, net)
    assert skipped and all(n.startswith("toRGB.") for n in skipped)
    run = jax.jit(lambda v, x: net.apply(v, x, noise_mode="const"))
    for s in meta["inputs"]:  # 8 < out_size exercises the bilinear pre-upsampling
        y = np.asarray(run(variables, arrays[f"in/x{s}"]))
        ref = arrays[f"out/y{s}"]
        assert ref.std() > 0.05 and ref.min() > 0.02 and ref.max() < 0.98  # not saturated
        np.testing.assert_allclose(y, ref, atol=1e-4, rtol=0)


def test_styleunet_parameter_count_matches_official_module():
    keys = json.loads((FIXTURES / "gagavatar_keys.json").read_text())
    up = {k: int(np.prod(s)) for k, s in keys.items() if k.startswith("upsampler.")}
    noise = sum(v for k, v in up.items() if ".noises." in k)
    never_called = sum(v for k, v in up.items() if k.startswith("upsampler.toRGB."))
    torch_params = sum(up.values()) - noise
    assert round(torch_params / 1e6, 1) == 48.7  # the "StyleUNet ~48.7M"
    net = make_styleunet("gagavatar")
    x = jax.ShapeDtypeStruct((1, 512, 512, 32), jnp.float32)
    variables, y = jax.eval_shape(
        lambda x: net.init_with_output(jax.random.key(0), x, noise_mode="none")[::-1], x
    )
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    assert count == torch_params - never_called == 48_672_343
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["buffers"])) == noise
    assert y.shape == (1, 512, 512, 3)


def test_styleunet_noise_modes_and_gradients():
    # out_size 8: one level of everything (down, up, SFT, upsampling conv, ToRGB skip)
    # keeps the XLA compiles of four variants + a gradient small on CPU.
    net = make_styleunet("tiny", in_size=8, out_size=8, in_dim=8)
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 8))
    variables = _random_variables(net, x)
    params = variables["params"]

    @jax.jit
    def run(params, buffers, key):
        v = {"params": params, "buffers": buffers}
        k1, k2 = (jax.random.wrap_key_data(d, impl="rbg") for d in (key, key + 1))
        modes = {
            m: net.apply(v, x, noise_mode=m, rngs={"noise": k1})
            for m in ("none", "const", "random")
        }
        modes["other"] = net.apply(v, x, noise_mode="random", rngs={"noise": k2})
        return modes

    key = jax.random.key_data(jax.random.key(3, impl="rbg"))  # cheap to compile on CPU
    buffers = variables["buffers"]
    # Noise strengths start at zero (as in the official init): every mode agrees.
    modes = run(params, buffers, key)
    np.testing.assert_allclose(modes["const"], modes["none"], atol=1e-6)
    np.testing.assert_allclose(modes["random"], modes["none"], atol=1e-6)
    # With non-zero strengths, random noise is a function of the rng only.
    params = jax.tree_util.tree_map(lambda a: a + 0.5 if a.shape == (1,) else a, params)
    modes = run(params, buffers, key)
    np.testing.assert_array_equal(modes["random"], run(params, buffers, key)["random"])
    assert np.abs(modes["random"] - modes["other"]).max() > 1e-3
    assert np.abs(modes["const"] - modes["none"]).max() > 1e-3
    assert np.all((np.asarray(modes["none"]) > 0) & (np.asarray(modes["none"]) < 1))

    # Every parameter influences the output (none is created but left unused);
    # "const" noise so that the noise strengths get a gradient too.
    def loss(params):
        y = net.apply({"params": params, "buffers": variables["buffers"]}, x, noise_mode="const")
        return jnp.sum(y * jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape))

    grads = jax.jit(jax.grad(loss))(params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g))]
    assert not dead, dead


def test_styleunet_rejects_bad_config_and_input():
    with pytest.raises(ValueError, match="in_size must be <= 2 \\* out_size"):
        table = ((4, 8), (8, 8), (16, 8), (32, 8), (64, 8))
        net = StyleUNet(in_size=64, out_size=16, in_dim=3, out_dim=3, channels=table)
        net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), noise_mode="none")
    net = make_styleunet("tiny")
    with pytest.raises(ValueError, match=r"x must be \[B, S, S, 32\]"):
        net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), noise_mode="none")
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 32)), noise_mode="fixed")
    with pytest.raises(ValueError, match="variant must be one of"):
        make_styleunet("huge")


@pytest.mark.gpu
def test_styleunet_bf16_tracks_f32_at_paper_size():
    # GAGAvatar's refiner at 512^2, batch 2: bfloat16 compute (float32 params) stays
    # within a few percent of float32. Compared before the sigmoid: random weights
    # saturate it, and a logit near 0 flipping sign would dominate a max error.
    net = make_styleunet("gagavatar", activation=False)
    x = jax.random.uniform(jax.random.key(0), (2, 512, 512, 32))
    variables = _random_variables(net, x[:1])
    f32 = jax.jit(lambda v, x: net.apply(v, x, noise_mode="const"))(variables, x)
    bf16 = jax.jit(lambda v, x: net.clone(dtype=jnp.bfloat16).apply(v, x, noise_mode="const"))(
        variables, x
    )
    f32, bf16 = np.asarray(f32), np.asarray(bf16, np.float32)
    assert f32.shape == (2, 512, 512, 3) and np.isfinite(bf16).all()
    rel = np.linalg.norm(bf16 - f32) / np.linalg.norm(f32)
    assert rel < 3e-2, rel
