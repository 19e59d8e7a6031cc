"""gshead_jax.data."""
