"""Paper-size GAGAvatar by ``jax.eval_shape`` (nothing allocated): published sizes.

References: the official torch modules' parameter counts (GAGAvatar's released
``GAGAvatar.pt``: DPT head 30,511,872, StyleUNet 48,675,388, vertex MLP 610,344, each
plane head 626,601, ``head_base`` 5023 x 256) minus the tensors the official forward
never calls (docs/gagavatar.md: DPT ``refinenet[0].resConfUnit1`` 1,180,160 and
StyleUNet ``toRGB`` 3,045); DINOv2 ViT-B/14's 86,580,480 (Hugging Face
``facebook/dinov2-base``); the Gaussian count 5023 + 2 x 296^2 = 180,255; and the
importer's own expected tree (``convert.gagavatar.expected_variables``).
"""

import jax
import jax.numpy as jnp
import pytest

from gshead_jax import camera, flame
from gshead_jax.convert.gagavatar import GAGAvatarModules, expected_variables
from gshead_jax.models import get_model, param_count
from gshead_jax.models.base import CONSTANTS, FROZEN, TRAINABLE

OFFICIAL = {
    "dpt": 30_511_872 - 1_180_160,
    "upsampler": 48_675_388 - 3_045,
    "gs_generator_g": 610_344,
    "gs_generator_l0": 626_601,
    "gs_generator_l1": 626_601,
    "head_base": 5023 * 256,
}
NOISE_BUFFERS = 699_024
DINOV2_B14 = 86_580_480


@pytest.fixture(scope="module")
def paper():
    model = get_model("gagavatar")
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return model, shapes


def test_parameter_counts_are_the_published_ones(paper):
    _, shapes = paper
    counts = {k: param_count(v) for k, v in shapes[TRAINABLE].items()}
    assert counts == OFFICIAL
    total = param_count(shapes[TRAINABLE])
    assert total == 82_336_694 - 1_180_160 - 3_045  # ~82M trainable
    assert shapes[TRAINABLE]["head_base"].shape == (5023, 256)
    assert param_count(shapes[FROZEN]["vit"]) == DINOV2_B14
    assert param_count(shapes[FROZEN]["upsampler_buffers"]) == NOISE_BUFFERS
    assert shapes[CONSTANTS]["flame"].v_template.shape == (5023, 3)


def test_param_tree_is_what_the_checkpoint_importer_fills(paper):
    # params_from_weights copies GAGAvatarWeights fields into these slots.
    _, shapes = paper
    mods = GAGAvatarModules()
    want = {
        "dpt": expected_variables(mods.dpt, vit_dim=mods.vit_dim),
        "gs_generator_g": expected_variables(mods.vertex_head),
        "gs_generator_l0": expected_variables(mods.plane_head),
        "gs_generator_l1": expected_variables(mods.plane_head),
    }
    for name, tree in want.items():
        got = jax.tree.map(lambda s: s.shape, shapes[TRAINABLE][name])
        assert got == jax.tree.map(lambda s: s.shape, tree), name
    unet = expected_variables(mods.refiner)
    assert jax.tree.map(lambda s: s.shape, shapes[TRAINABLE]["upsampler"]["params"]) == (
        jax.tree.map(lambda s: s.shape, unet["params"])
    )
    assert jax.tree.map(lambda s: s.shape, shapes[FROZEN]["upsampler_buffers"]) == (
        jax.tree.map(lambda s: s.shape, unet["buffers"])
    )


def test_avatar_and_drive_shapes(paper):
    model, shapes = paper
    b = 1
    image = jax.ShapeDtypeStruct((b, 512, 512, 3), jnp.float32)
    sp = flame.FlameParams.zeros((b,), 300, 100)
    cam = camera.head_camera(jnp.zeros(b), width=512, height=512)
    avatar = jax.eval_shape(model.reconstruct, shapes, image, sp, cam)
    n = 5023 + 2 * 296**2
    assert n == 180_255
    assert avatar.means.shape == (b, n, 3)
    assert avatar.colors.shape == (b, n, 32)
    assert avatar.opacities.shape == (b, n)
    assert avatar.num_vertices == 5023
    rgb, aux = jax.eval_shape(model.drive, shapes, avatar, sp, cam)
    assert rgb.shape == (b, 512, 512, 3) and rgb.dtype == jnp.float32
    assert aux["coarse"].shape == (b, 512, 512, 3)
    assert aux["features"].shape == (b, 512, 512, 32)
    assert aux["lifted_points"].shape == (b, 2 * 296**2, 3)
    assert aux["flame_vertices"].shape == (b, 5023, 3)
    assert aux["overflow"].shape == (b,)
