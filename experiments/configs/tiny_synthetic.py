r"""tiny_synthetic: the embedded default -- synthetic heads, tiny GAGAvatar, a 2-core CPU.

Renders a small synthetic dataset (32 training identities and 4 held-out ones, one
16-frame clip each, 64^2, under the workdir), trains ``gagavatar-tiny`` on it for 400
steps with GAGAvatar's losses, evaluates held-out self-reenactment at the start and
the end, and writes a reenactment video: a held-out portrait driven by another
held-out identity. About 6.5 minutes on a 2-core CPU (README, results table).

    python experiments/train.py --config=experiments/configs/tiny_synthetic.py \
        --workdir=runs/tiny_synthetic

``--config=experiments/configs/tiny_synthetic.py:smoke`` is a ~3-minute smoke
run (32^2, 4 steps; the trainer tests start from it).

Choices (this is a demonstration of the pipeline at toy scale, not the paper):
* the model's FLAME is the synthetic data's (the full-size stand-in: 5023 vertices,
  300 shape / 100 expression components), so the vertex Gaussians move exactly as
  the rendered heads do;
* Adam(0.9, 0.99) at lr 3e-3 (30x GAGAvatar's) with a linear decay to 0.1x: a few
  hundred steps have to show learning (after 100 steps, held-out PSNR 17.6 / 18.3 /
  19.3 dB at lr 1e-3 / 2e-3 / 3e-3);
* batch 4 (on a 2-core CPU a step of 4 costs little more than a step of 2; 8 costs 2x);
* 8x8 splat tiles: at 64^2 they splat 1.6x faster than 16x16 on a CPU.
"""

import ml_collections as mc


def get_config(arg: str | None = None) -> mc.ConfigDict:
    smoke = arg == "smoke"
    size = 32 if smoke else 64
    c = mc.ConfigDict()
    c.seed = 0
    c.mixed_precision = False
    c.strict = False
    c.export = True

    c.model = mc.ConfigDict()
    c.model.name = "gagavatar-tiny"
    c.model.overrides = dict(
        standin_vertices=5023,
        standin_shape=300,
        standin_expression=100,
        render_size=size,
        plane_size=16 if smoke else 32,
        tile_size=8,
    )
    c.model.init = dict(vit=None, gagavatar=None)

    synth = dict(
        kind="synthetic", generate=True, clips=1, frames=8 if smoke else 16, views=1,
        image_size=size, num_gaussians=4096 if smoke else 8192,
    )  # fmt: skip
    c.data = mc.ConfigDict()
    c.data.sources = mc.ConfigDict()
    c.data.sources.synth_train = dict(
        synth, path="{workdir}/data/synth_train", identities=2 if smoke else 32, seed=0
    )
    c.data.sources.synth_heldout = dict(
        synth, path="{workdir}/data/synth_heldout", identities=2 if smoke else 4, seed=1
    )
    c.data.batch_size = 2 if smoke else 4
    c.data.num_workers = 0
    c.data.read_threads = 2
    c.data.prefetch = 2

    steps = 4 if smoke else 400
    c.stage_order = ("main",)
    c.stages = mc.ConfigDict()
    c.stages.main = dict(
        steps=steps,
        data=dict(sources=("synth_train",), weights=(1.0,), pair_rule="same_clip"),
        losses=dict(l1=1.0, box_l1=1.0, lifting=10.0, ssim=0.0, perceptual=0.0),
        model_stage=None,
        freeze=(),
        optimizer=dict(
            lr=3e-3, b1=0.9, b2=0.99, schedule="linear", end_factor=0.1, decay_steps=steps,
            lr_groups=dict(style=dict(patterns=("style_mlp", "final_linear"), scale=0.1)),
        ),
    )  # fmt: skip

    c.perceptual = dict(kind="none")  # OFF: it needs imported weights (docs/losses.md)

    c.eval = mc.ConfigDict()
    c.eval.sources = ("synth_heldout",)
    c.eval.pair_rule = "same_clip"
    c.eval.batch_size = 4
    c.eval.every = 0 if smoke else 200
    c.eval.max_batches = None
    c.eval.at_start = True
    c.eval.best_metric = "psnr"
    c.eval.best_mode = "max"

    c.checkpoint = dict(every=2 if smoke else 100, keep=2, use_async=True)
    c.log = dict(every=1 if smoke else 10, tensorboard=True, progress=not smoke)

    # The reenactment video written at the end (experiments/train.py).
    c.video = dict(
        enabled=True,
        portrait=dict(source="synth_heldout", identity=0),
        driver=dict(source="synth_heldout", identity=1, clip=0, frames=8 if smoke else 75),
        orbit=True,
        side_by_side=True,
        height=64 if smoke else 192,
    )
    return c
