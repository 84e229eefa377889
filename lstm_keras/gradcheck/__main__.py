"""Runs `lstm_keras.gradcheck.cli.main`: `python -m lstm_keras.gradcheck`."""

import sys

from lstm_keras.gradcheck.cli import main

if __name__ == "__main__":
    sys.exit(main())
