"""The TensorFlow fast path: custom CPU ops for the LSTM recurrence."""
