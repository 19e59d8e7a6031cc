r"""rar_vfhq: RAR's two training stages on tracked video plus synthetic high-resolution data.

Stage 1 (generalisation): all data (tracked video and synthetic heads mixed 3:1),
pixel L1 (full and head box) + SSIM; every generator part trains (the WebSSL /
DINOv2 encoder stays frozen unless ``model.overrides.finetune_encoder``).
Stage 2 (high-frequency texture): synthetic high-resolution data, L1 + perceptual
(LPIPS-VGG) loss; geometry frozen (``RAR.trainable_mask(params, 2)``: encoder,
surface tokens, geometry head and reenactment module keep their stage-1 values;
appearance head and refiner train). The loop moves to stage 2 by itself and
resumes inside either stage.

The paper (arXiv 2509.05582) gives the stages and their losses, not every number:
steps, learning rates and mixing weights here are our choices (Adam, lr 1e-4
cosine-decayed to 0.1x per stage, batch 8).

Needs (``check_inputs`` names each missing file and how to get it):
  data/VFHQ_CENTERED/{img_lmdb,optim.pkl,dataset.json}   GAGAvatar_track output
  third_party/assets/flame/generic_model.pkl             FLAME 2020
  third_party/assets/dinov2/dinov2-large/                encoder of rar-L (facebook/dinov2-large;
                                                         rar-1B: a facebook/webssl-dino1b folder)
  third_party/assets/perceptual/{vgg16-397923af.pth,vgg.pth}   LPIPS-VGG (stage 2)
  third_party/assets/flame/generic_model_labelled.npz    FLAME with region labels, for the
                                                         synthetic heads (docs/data.md)
The synthetic sources are rendered into data/ at start-up if missing (on the GPU).

    python experiments/train.py --config=experiments/configs/rar_vfhq.py \
        --workdir=runs/rar_vfhq

``rar_vfhq.py:1b`` uses rar-1B with WebSSL-DINO 1B weights.
"""

import ml_collections as mc

DATA = "data/VFHQ_CENTERED"
ASSETS = "third_party/assets"


def get_config(arg: str | None = None) -> mc.ConfigDict:
    big = arg == "1b"
    c = mc.ConfigDict()
    c.seed = 0
    c.mixed_precision = True
    c.strict = False
    c.export = True

    c.model = mc.ConfigDict()
    c.model.name = "rar-1B" if big else "rar-L"
    c.model.overrides = dict(flame_path=f"{ASSETS}/flame/generic_model.pkl")
    vit = f"{ASSETS}/webssl/webssl-dino1b-full2b-224" if big else f"{ASSETS}/dinov2/dinov2-large"
    c.model.init = dict(vit=vit, gagavatar=None)

    # Synthetic heads must use the model's FLAME: a FLAME file with region labels
    # (docs/data.md, "Real FLAME"; the licensed file has none -- attach them first).
    synth = dict(kind="synthetic", generate=True, views=4, num_gaussians=65536,
                 model=f"{ASSETS}/flame/generic_model_labelled.npz", seed=0)  # fmt: skip
    c.data = mc.ConfigDict()
    c.data.sources = mc.ConfigDict()
    c.data.sources.vfhq_train = dict(kind="tracked", path=DATA, split="train")
    c.data.sources.vfhq_val = dict(kind="tracked", path=DATA, split="val")
    c.data.sources.synth = dict(
        synth, path="data/synth_512", identities=512, clips=2, frames=16, image_size=512
    )
    c.data.batch_size = 8
    c.data.num_workers = 8
    c.data.read_threads = 4
    c.data.prefetch = 2

    def adam(steps):
        return dict(lr=1e-4, b1=0.9, b2=0.99, schedule="cosine", end_factor=0.1,
                    decay_steps=steps, warmup_steps=1000)  # fmt: skip

    c.stage_order = ("generalise", "texture")
    c.stages = mc.ConfigDict()
    c.stages.generalise = dict(
        steps=150_000,
        data=dict(sources=("vfhq_train", "synth"), weights=(3.0, 1.0),
                  pair_rule=("same_clip", "multi_view")),
        losses=dict(l1=1.0, box_l1=1.0, ssim=0.2, lifting=0.0, perceptual=0.0),
        model_stage=1,
        freeze=(),
        optimizer=adam(150_000),
    )  # fmt: skip
    c.stages.texture = dict(
        steps=50_000,
        data=dict(sources=("synth",), weights=(1.0,), pair_rule="multi_view"),
        losses=dict(l1=1.0, box_l1=1.0, ssim=0.0, lifting=0.0, perceptual=0.1),
        model_stage=2,
        freeze=(),
        optimizer=adam(50_000),
    )  # fmt: skip
    c.perceptual = dict(kind="lpips_vgg", weights_dir=f"{ASSETS}/perceptual")

    c.eval = mc.ConfigDict()
    c.eval.sources = ("vfhq_val",)
    c.eval.pair_rule = "same_clip"
    c.eval.batch_size = 8
    c.eval.every = 10_000
    c.eval.max_batches = 64
    c.eval.at_start = True
    c.eval.best_metric = "psnr"
    c.eval.best_mode = "max"

    c.checkpoint = dict(every=5_000, keep=3, use_async=True)
    c.log = dict(every=100, tensorboard=True, progress=True)
    c.video = dict(
        enabled=True,
        portrait=dict(source="vfhq_val", identity=0),
        driver=dict(source="vfhq_val", identity=1, clip=0, frames=100),
        orbit=True,
        side_by_side=True,
        height=512,
    )
    return c
