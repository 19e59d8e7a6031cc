"""gshead_jax.train: losses, train state, steps, multi-stage loop, checkpoints.

from gshead_jax.train import losses   # l1, box L1, SSIM, lifting, perceptual
"""
