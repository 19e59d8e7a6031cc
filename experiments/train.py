r"""Trains an avatar model: the main job.

    python experiments/train.py --config=experiments/configs/tiny_synthetic.py \
        --workdir=runs/tiny_synthetic [--config.stages.main.steps=500]

The config (an ``ml_collections`` file, ``get_config(arg)``; ``file.py:arg`` passes
``arg``) declares the model, data sources, stages, evaluation, checkpoints and the
final video; its docstring holds its launch command. Rerunning the same command on
the same workdir resumes from the newest checkpoint. At the end the script writes
``WORKDIR/export`` (inference-only params), ``WORKDIR/reenact.{mp4,gif,png}`` (when
``config.video.enabled``) and ``WORKDIR/summary.json``.

Multi-GPU on one machine needs nothing more (all local devices form the ``data``
mesh). Several machines: start the same command on each with ``--distributed``
(``jax.distributed.initialize()``: SLURM and other launchers are detected; or pass
``--coordinator_address``, ``--num_processes`` and ``--process_id``). README,
"Multi-GPU and multi-host".
"""

import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/tiny_synthetic.py", "Training config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-process training)."
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives", None, "CPU-only multi-process runs: 'gloo' (tests, no accelerator)."
)
_NO_VIDEO = flags.DEFINE_bool("novideo", False, "Skip the final reenactment video.")
flags.mark_flags_as_required(["workdir"])


def _initialize_distributed() -> None:
    import jax

    if _CPU_COLLECTIVES.value:
        jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
    if _DISTRIBUTED.value or _COORDINATOR.value:
        kwargs = {}
        if _COORDINATOR.value:
            kwargs = dict(
                coordinator_address=_COORDINATOR.value,
                num_processes=_NUM_PROCESSES.value,
                process_id=_PROCESS_ID.value,
            )
        jax.distributed.initialize(**kwargs)


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    _initialize_distributed()
    import jax

    from gshead_jax.train import loop

    config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
    logging.info(
        "jax %s, %d process(es), %d device(s): %s",
        jax.__version__,
        jax.process_count(),
        jax.device_count(),
        jax.devices()[0].device_kind,
    )
    run = loop.Run.create(config, workdir)
    result = loop.train_and_evaluate(config, workdir, run=run)
    state = result.pop("state")
    if config.video.enabled and not _NO_VIDEO.value and jax.process_index() == 0:
        from gshead_jax.train import video
        from gshead_jax.train.state import host_copy

        params = {**host_copy(state.params), "constants": host_copy(run.constants)}
        result["video"] = video.run_video(config, workdir, run.model, params, out_dir=workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(result, f, indent=1, default=float)
        for split in ("eval_start", "eval"):
            if split in result:
                m = result[split]
                print(
                    f"{split:10s} held-out self-reenactment: PSNR {m['psnr']:.2f} dB, "
                    f"SSIM {m['ssim']:.4f} (coarse {m['coarse_psnr']:.2f} / "
                    f"{m['coarse_ssim']:.4f}), {m['count']} pairs"
                )
        print(f"steps {result['step']}, wall {result['wall_time_s']:.0f} s; outputs in {workdir}")


if __name__ == "__main__":
    app.run(main)
