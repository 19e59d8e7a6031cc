"""gshead_jax.models."""
