"""`python -m training ...` is `lstm-keras-train ...` (see training/train.py)."""

import sys

from training.train import main

sys.exit(main())
