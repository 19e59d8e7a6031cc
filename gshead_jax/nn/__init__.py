"""gshead_jax.nn."""
