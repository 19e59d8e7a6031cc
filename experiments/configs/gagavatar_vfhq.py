r"""gagavatar_vfhq: GAGAvatar's paper recipe on a tracked dataset in GAGAvatar's layout.

The official training (``configs/model/gaga.yaml``, ``train.py``,
``GAGAvatar.configure_optimizers``): Adam with betas (0, 0.99), lr 1e-4, the StyleUNet's
``style_mlp`` and ``final_linear`` at 0.1x, a linear decay to 0.1x over 200k steps
(torch ``LinearLR``), batch 8, 200k steps; loss = L1 + head-box L1 (coarse and
refined) + 10 x lifting + 1e-2 x FacePerceptual on the box crops; frozen DINOv2
ViT-B/14; FLAME with scale 5 and focal 12.

Needs (``check_inputs`` names each missing file and how to get it):
  data/VFHQ_CENTERED/{img_lmdb,optim.pkl,dataset.json}   GAGAvatar_track output
  third_party/assets/flame/generic_model.pkl             FLAME 2020 (or FLAME_with_eye.pt)
  third_party/assets/dinov2/dinov2-base/                 facebook/dinov2-base (HF folder)
  third_party/assets/perceptual/{alexnet-owt-7be5be79.pth,vgg_face_dag.pth}

    python experiments/train.py --config=experiments/configs/gagavatar_vfhq.py \
        --workdir=runs/gagavatar_vfhq

Arguments (``gagavatar_vfhq.py:ARG``): ``noperceptual`` drops the FacePerceptual term
(no VGG-Face weights needed); ``bf16`` computes in bfloat16 (float32 master params).
Several GPUs: the same command (all local devices, batch 8 split over them; keep
the global batch a multiple of the device count). Several hosts: add --distributed.
"""

import ml_collections as mc

DATA = "data/VFHQ_CENTERED"
ASSETS = "third_party/assets"


def get_config(arg: str | None = None) -> mc.ConfigDict:
    args = set((arg or "").split(","))
    c = mc.ConfigDict()
    c.seed = 0
    c.mixed_precision = "bf16" in args
    c.strict = False
    c.export = True

    c.model = mc.ConfigDict()
    c.model.name = "gagavatar"
    c.model.overrides = dict(flame_path=f"{ASSETS}/flame/generic_model.pkl")
    c.model.init = dict(vit=f"{ASSETS}/dinov2/dinov2-base", gagavatar=None)

    c.data = mc.ConfigDict()
    c.data.sources = mc.ConfigDict()
    c.data.sources.vfhq_train = dict(kind="tracked", path=DATA, split="train")
    c.data.sources.vfhq_val = dict(kind="tracked", path=DATA, split="val")
    c.data.batch_size = 8
    c.data.num_workers = 8  # the official loader: num_workers = batch size
    c.data.read_threads = 4
    c.data.prefetch = 2

    c.stage_order = ("main",)
    c.stages = mc.ConfigDict()
    c.stages.main = dict(
        steps=200_000,
        data=dict(sources=("vfhq_train",), weights=(1.0,), pair_rule="same_clip"),
        losses=dict(
            l1=1.0, box_l1=1.0, lifting=10.0, ssim=0.0,
            perceptual=0.0 if "noperceptual" in args else 1e-2,
        ),
        model_stage=None,
        freeze=(),
        optimizer=dict(
            lr=1e-4, b1=0.0, b2=0.99, schedule="linear", end_factor=0.1, decay_steps=200_000,
            lr_groups=dict(style=dict(patterns=("style_mlp", "final_linear"), scale=0.1)),
        ),
    )  # fmt: skip
    c.perceptual = (
        dict(kind="none")
        if "noperceptual" in args
        else dict(kind="face", weights_dir=f"{ASSETS}/perceptual")
    )

    c.eval = mc.ConfigDict()
    c.eval.sources = ("vfhq_val",)
    c.eval.pair_rule = "same_clip"
    c.eval.batch_size = 8
    c.eval.every = 10_000  # the official CHECK_INTERVAL
    c.eval.max_batches = 64
    c.eval.at_start = True
    c.eval.best_metric = "ssim"  # the official keeps the best validation SSIM
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
