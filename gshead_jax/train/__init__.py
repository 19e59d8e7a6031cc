"""gshead_jax.train."""
