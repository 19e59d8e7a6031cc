r"""Self- and cross-identity reenactment metrics of a trained model on a split -> markdown + JSON.

    python experiments/evaluate.py --config=experiments/configs/tiny_synthetic.py \
        --workdir=runs/tiny_synthetic [--sources=synth_heldout] [--max_batches=N]

For each source (default: ``config.eval.sources``):

* **self-reenactment** (``same_clip``: each clip's first frame is the portrait, every
  other frame of the clip a target with ground truth -- GAGAvatar's protocol);
* **cross-identity** (``cross_identity``: the portrait is the first frame of the next
  identity): metrics need the ground truth -- the portrait's identity under the
  driver's motion -- which exists for synthetic sources only (rendered now by
  ``evaluation.synthetic_cross_targets``); for real data the row says "no ground truth".

Metrics: PSNR, SSIM, L1 of the refined and the coarse image (``gshead_jax.metrics``,
images clipped to [0, 1], per image, averaged over pairs). Params: ``--params`` (an
export folder; default WORKDIR/export). Writes ``eval.md`` and ``eval.json`` to
``--out`` (default WORKDIR).
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/tiny_synthetic.py", "The run's training config."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_PARAMS = flags.DEFINE_string("params", None, "Export folder (default WORKDIR/export).")
_SOURCES = flags.DEFINE_list("sources", None, "Configured sources (default config.eval.sources).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global eval batch (default config.eval).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None, "Batches per source and protocol.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR).")
flags.mark_flags_as_required(["workdir"])

PROTOCOLS = (("self", "same_clip"), ("cross", "cross_identity"))


def evaluate_sources(config, workdir, model, params, names, *, batch_size, max_batches):
    """Rows ``{source, protocol, pairs, psnr, ssim, l1, coarse_*}`` for every source."""
    from gshead_jax.data import eval_pipeline
    from gshead_jax.train import evaluation, inputs, loop, video
    from gshead_jax.train.state import replicate
    from gshead_jax.train.step import make_eval_step

    mesh = loop.make_mesh()
    step = make_eval_step(model, mesh)
    owned = replicate({k: params[k] for k in ("trainable", "frozen")}, mesh)
    constants = replicate(params["constants"], mesh)
    rows = []
    for name in names:
        (src,) = inputs.build_sources(config, [name], workdir, progress=False)
        for protocol, rule in PROTOCOLS:
            row = {"source": name, "protocol": protocol}
            transform = None
            if protocol == "cross":
                if video.synthetic_config_of(src) is None:
                    rows.append({**row, "note": "no ground truth (real data)"})
                    continue
                transform = evaluation.synthetic_cross_targets(src)
            ds = eval_pipeline([src], batch_size=batch_size, pair_rule=rule, prefetch=0)
            it = iter(ds)
            try:
                summary, _ = evaluation.evaluate(
                    step, owned, constants, it, mesh, max_batches=max_batches, transform=transform
                )
            finally:
                it.close()
            rows.append({**row, **summary})
    return rows


def markdown(rows) -> str:
    head = "| source | protocol | pairs | PSNR | SSIM | L1 | coarse PSNR | coarse SSIM |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['source']} | {r['protocol']} | - | {r['note']} | | | | |")
            continue
        lines.append(
            f"| {r['source']} | {r['protocol']} | {r['count']} | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {r['l1']:.4f} | {r['coarse_psnr']:.2f} | {r['coarse_ssim']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from gshead_jax.train import checkpoint

    config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
    model, params = checkpoint.load_model(_PARAMS.value or os.path.join(workdir, "export"))
    names = _SOURCES.value or list(config.eval.sources)
    rows = evaluate_sources(
        config,
        workdir,
        model,
        params,
        names,
        batch_size=_BATCH.value or config.eval.batch_size,
        max_batches=_MAX_BATCHES.value,
    )
    out = _OUT.value or workdir
    os.makedirs(out, exist_ok=True)
    table = markdown(rows)
    with open(os.path.join(out, "eval.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump({"model": model.name, "rows": rows}, f, indent=1)
    print(table)


if __name__ == "__main__":
    app.run(main)
