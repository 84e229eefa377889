"""`python -m tuning ...` is `lstm-keras-tune ...` (see tuning/tune.py)."""

import sys

from tuning.tune import main

sys.exit(main())
