"""Cross-identity ground truth for synthetic data, and metric averaging over valid pairs."""

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax import metrics
from gshead_jax.data import SyntheticSource, eval_pipeline
from gshead_jax.train import evaluation, loop


def test_cross_targets_render_the_portrait_identity_with_the_driver_motion():
    """For same-identity pairs the rendered truth is the recorded target frame; for
    cross pairs it is the portrait's identity, not the driver's frame."""
    src = SyntheticSource(identities=2, clips=1, frames=3, image_size=32, num_gaussians=2048)
    transform = evaluation.synthetic_cross_targets(src)
    same = next(iter(eval_pipeline([src], batch_size=2, pair_rule="same_clip", prefetch=0)))
    out = transform(same)
    assert same["valid"].all()
    diff = np.abs(out["target_image"].astype(int) - same["target_image"].astype(int))
    assert diff.max() <= 1  # the same renderer (rounding of the last bit at most)
    np.testing.assert_array_equal(out["target_params"]["shape"], same["source_params"]["shape"])

    cross = next(iter(eval_pipeline([src], batch_size=2, pair_rule="cross_identity", prefetch=0)))
    out = transform(cross)
    assert (cross["meta"]["source_identity"] != cross["meta"]["target_identity"]).all()
    np.testing.assert_array_equal(out["target_params"]["shape"], cross["source_params"]["shape"])
    np.testing.assert_array_equal(out["target_viewmat"], cross["target_viewmat"])
    assert np.abs(out["target_image"].astype(int) - cross["target_image"].astype(int)).mean() > 2


def test_evaluate_averages_valid_pairs_only():
    """A stand-in eval step (target itself, shifted by 0.1) against metrics computed here."""
    mesh = loop.make_mesh(1)
    r = np.random.default_rng(0)

    def step(owned, batch, constants):
        t = batch["target_image"]
        pred = jnp.clip(t + 0.1, 0, 1)
        return {
            "psnr": metrics.psnr(pred, t), "ssim": metrics.ssim(pred, t), "l1": metrics.l1(pred, t),
            "coarse_psnr": metrics.psnr(t, t * 0.5), "coarse_ssim": metrics.ssim(t, t * 0.5),
            "coarse_l1": metrics.l1(t, t * 0.5), "overflow": jnp.zeros(t.shape[0], bool),
            "valid": batch["valid"],
        }  # fmt: skip

    def batch(valid):
        b = len(valid)
        names = ("shape", "expression", "jaw", "eyes", "neck", "global_pose", "translation")
        p = {k: np.zeros((b, 3), np.float32) for k in names}
        img = r.integers(0, 256, (b, 16, 16, 3), dtype=np.uint8)
        out = {"source_image": img, "target_image": img, "source_params": p, "target_params": p}
        for which in ("source", "target"):
            out[f"{which}_viewmat"] = np.zeros((b, 4, 4), np.float32)
            out[f"{which}_K"] = np.zeros((b, 3, 3), np.float32)
        out.update(target_bbox=np.zeros((b, 4), np.float32), valid=np.asarray(valid), meta={})
        return out

    batches = [batch([True, True]), batch([True, False])]
    summary, _ = evaluation.evaluate(jax.jit(step), {}, {}, batches, mesh)
    assert summary["count"] == 3
    imgs = np.concatenate([b["target_image"][b["valid"]] for b in batches]) / 255.0
    pred = np.clip(imgs + 0.1, 0, 1)
    mse = ((pred - imgs) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(summary["psnr"], np.mean(-10 * np.log10(mse)), rtol=1e-5)
    np.testing.assert_allclose(summary["l1"], np.abs(pred - imgs).mean(), rtol=1e-5)
