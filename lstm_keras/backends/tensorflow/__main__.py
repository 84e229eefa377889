"""`python -m lstm_keras.backends.tensorflow`: prebuild the custom ops."""

import sys

from lstm_keras.backends.tensorflow import build

sys.exit(build.main())
