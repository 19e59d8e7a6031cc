"""gshead_jax.flame."""
