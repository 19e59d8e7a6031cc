r"""gpu_synthetic: the paper-size GAGAvatar on 512^2 synthetic heads, sized for one GPU.

Renders 128 training identities (2 clips x 32 frames) and 8 held-out ones at 512^2
into ``data/`` on the GPU at start-up (~2.5 GB), then trains ``gagavatar`` (DINOv2
ViT-B/14, 296^2 lifting planes, 180k Gaussians, 32 channels, StyleUNet) with the
paper's optimiser and losses for a fixed budget of 20 minutes of training
(``max_train_seconds``), evaluating held-out self-reenactment every 1000 steps.

    python experiments/train.py --config=experiments/configs/gpu_synthetic.py \
        --workdir=runs/gpu_synthetic

Arguments (``gpu_synthetic.py:ARG[,ARG]``): ``dinov2`` loads the frozen encoder from
``third_party/assets/dinov2/dinov2-base`` (else it is random, as the library ships
no weights); ``bf16`` computes in bfloat16; ``long`` removes the time budget (200k
steps, the paper's schedule). Several GPUs of one host: the same command.
"""

import ml_collections as mc


def get_config(arg: str | None = None) -> mc.ConfigDict:
    args = set((arg or "").split(","))
    c = mc.ConfigDict()
    c.seed = 0
    c.mixed_precision = "bf16" in args
    c.strict = False
    c.export = True
    c.max_train_seconds = None if "long" in args else 20 * 60

    c.model = mc.ConfigDict()
    c.model.name = "gagavatar"
    c.model.overrides = dict()
    vit = "third_party/assets/dinov2/dinov2-base" if "dinov2" in args else None
    c.model.init = dict(vit=vit, gagavatar=None)

    synth = dict(kind="synthetic", generate=True, views=1, image_size=512, num_gaussians=32768)
    c.data = mc.ConfigDict()
    c.data.sources = mc.ConfigDict()
    c.data.sources.synth_train = dict(
        synth, path="data/synth512_train", identities=128, clips=2, frames=32, seed=0
    )
    c.data.sources.synth_heldout = dict(
        synth, path="data/synth512_heldout", identities=8, clips=1, frames=16, seed=1
    )
    c.data.batch_size = 8
    c.data.num_workers = 4
    c.data.read_threads = 4
    c.data.prefetch = 4

    steps = 200_000
    c.stage_order = ("main",)
    c.stages = mc.ConfigDict()
    c.stages.main = dict(
        steps=steps,
        data=dict(sources=("synth_train",), weights=(1.0,), pair_rule="same_clip"),
        losses=dict(l1=1.0, box_l1=1.0, lifting=10.0, ssim=0.0, perceptual=0.0),
        model_stage=None,
        freeze=(),
        optimizer=dict(
            lr=1e-4, b1=0.0, b2=0.99, schedule="linear", end_factor=0.1, decay_steps=steps,
            lr_groups=dict(style=dict(patterns=("style_mlp", "final_linear"), scale=0.1)),
        ),
    )  # fmt: skip
    c.perceptual = dict(kind="none")  # OFF: it needs imported weights (docs/losses.md)

    c.eval = mc.ConfigDict()
    c.eval.sources = ("synth_heldout",)
    c.eval.pair_rule = "same_clip"
    c.eval.batch_size = 8
    c.eval.every = 1000
    c.eval.max_batches = None  # 8 identities x 15 targets = 120 pairs
    c.eval.at_start = True
    c.eval.best_metric = "psnr"
    c.eval.best_mode = "max"

    c.checkpoint = dict(every=1000, keep=3, use_async=True)
    c.log = dict(every=50, tensorboard=True, progress=True)
    c.video = dict(
        enabled=True,
        portrait=dict(source="synth_heldout", identity=0),
        driver=dict(source="synth_heldout", identity=1, clip=0, frames=100),
        orbit=True,
        side_by_side=True,
        height=512,
    )
    return c
