"""gshead_jax.convert."""
