"""Backend-specific fast paths for `lstm_keras.dispatch`."""
