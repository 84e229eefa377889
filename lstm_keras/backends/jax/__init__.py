"""The JAX fast path: cuDNN's LSTM through `jax.experimental.rnn`."""
