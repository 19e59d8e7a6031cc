"""gshead_jax.splat."""
