"""gshead_jax.train: losses, train state, steps, multi-stage loop, checkpoints.

losses       l1, box L1, SSIM, lifting, perceptual (docs/losses.md)
stages       stages from the config, learned leaves, optimisers and schedules
state        TrainState and its placement on the mesh
step         the data-parallel update and eval steps (shard_map over "data")
loop         Run, train_and_evaluate (docs/training.md)
checkpoint   Orbax checkpoints, best-by-metric, inference exports
inputs       data sources, file checks, pretrained weights
summaries    TensorBoard, metrics.jsonl, image grids
evaluation   self- and cross-identity reenactment metrics
reenactment  driving sequences, reenact(), MP4 / GIF; video: the run's video

from gshead_jax.train import losses   # l1, box L1, SSIM, lifting, perceptual
from gshead_jax.train import loop     # loop.train_and_evaluate(config, workdir)
"""
