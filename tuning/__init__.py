"""The tuning command: `lstm-keras-tune`, or `python -m tuning`.

`tuning/tune.py` parses the flags into one `lstm_keras.tuning.TuneConfig`
and calls `lstm_keras.tuning.tune`; the hypermodels, the search and its
report live in `lstm_keras.tuning`.
"""
