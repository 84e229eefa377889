"""The search space of the tuning command: bounds, overrides, validation.

`SearchSpace` holds one `(low, high)` pair per tuned hyperparameter;
`SearchSpace.from_overrides` starts from the defaults and applies a small
JSON config file, then command-line values, and checks the result:

```json
{"units": [32, 256], "dropout": [0.0, 0.5], "learning_rate": [1e-4, 1e-2]}
```
"""

import dataclasses
import json
import math
import os

# name: (kind, description); the order is the order of `results.csv`.
BOUNDS = {
    "units": ("int", "LSTM units per direction, sampled in powers of 2"),
    "num_layers": ("int", "stacked LSTM layers"),
    "dropout": ("float", "LSTM input dropout, in steps of 0.1"),
    "recurrent_dropout": ("float", "LSTM dropout on h_prev, steps of 0.1"),
    "learning_rate": ("float", "Adam's (initial) rate, log-uniform"),
}
DROPOUT_STEP = 0.1


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Bounds of the tuned hyperparameters (both ends included).

    Attributes:
        units: `(low, high)` positive integers; the values tried are
            `low * 2**k` up to `high`. Defaults to `(32, 256)`.
        num_layers: `(low, high)` positive integers. Defaults to `(1, 2)`.
        dropout: `(low, high)` in [0, 1), sampled in steps of 0.1. Defaults
            to `(0.0, 0.5)`.
        recurrent_dropout: `(low, high)` in [0, 1), steps of 0.1. Defaults
            to `(0.0, 0.3)`.
        learning_rate: `(low, high)` positive, sampled log-uniformly.
            Defaults to `(3e-4, 1e-2)`.
        layer_norm: Boolean, whether the layer-normalized cell
            (`lstm_options={"layer_norm": True}`) is one more choice.
            Defaults to `False`.
    """

    units: tuple = (32, 256)
    num_layers: tuple = (1, 2)
    dropout: tuple = (0.0, 0.5)
    recurrent_dropout: tuple = (0.0, 0.3)
    learning_rate: tuple = (3e-4, 1e-2)
    layer_norm: bool = False

    def __post_init__(self):
        for name, (kind, _) in BOUNDS.items():
            bounds = getattr(self, name)
            object.__setattr__(self, name, _check_pair(name, kind, bounds))
        if not isinstance(self.layer_norm, bool):
            raise ValueError(
                "Received an invalid value for search space entry "
                f"layer_norm, expected true or false, got {self.layer_norm!r}."
            )

    @classmethod
    def from_overrides(cls, config_file=None, **overrides):
        """The default space, then `config_file`, then `overrides` on top.

        Args:
            config_file: Path of a JSON object mapping names of `BOUNDS`
                (and `"layer_norm"`) to `[low, high]` (a boolean for
                `layer_norm`), or `None`. Defaults to `None`.
            **overrides: The same names with `(low, high)` pairs; `None`
                values are ignored.

        Returns:
            A validated `SearchSpace`.
        """
        values = {}
        if config_file is not None:
            values.update(_read_config(config_file))
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = set(BOUNDS) | {"layer_norm"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown search space entries {unknown}; known entries: "
                f"{sorted(known)}."
            )
        return cls(**values)

    def to_dict(self):
        return {
            **{name: list(getattr(self, name)) for name in BOUNDS},
            "layer_norm": self.layer_norm,
        }


def parse_range(text):
    """`"LOW:HIGH"` (or a single value, both ends) as a pair of floats.

    Integers stay integers, so `"32:256"` gives `(32, 256)`.
    """
    parts = text.split(":")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(f"Expected LOW:HIGH, got {text!r}.")
    return tuple(_number(part, text) for part in parts)


def _number(part, text):
    try:
        return int(part)
    except ValueError:
        pass
    try:
        return float(part)
    except ValueError:
        raise ValueError(
            f"Expected LOW:HIGH of numbers, got {text!r}."
        ) from None


def _read_config(path):
    try:
        with open(path) as f:
            values = json.load(f)
    except OSError as error:
        raise ValueError(
            f"Cannot read the search space file {os.fspath(path)!r}: {error}"
        ) from error
    except json.JSONDecodeError as error:
        raise ValueError(
            f"The search space file {os.fspath(path)!r} is not valid JSON: "
            f"{error}"
        ) from error
    if not isinstance(values, dict):
        raise ValueError(
            f"The search space file {os.fspath(path)!r} must hold a JSON "
            f"object of name: [low, high], got {values!r}."
        )
    return values


def _check_pair(name, kind, bounds):
    def invalid(why):
        return ValueError(
            f"Received an invalid value for search space bound {name}: "
            f"{why}, got {bounds!r}."
        )

    if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__"):
        raise invalid("expected a pair [low, high]")
    if len(bounds) != 2:
        raise invalid("expected a pair [low, high]")
    low, high = bounds
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid("expected numbers")
        if not math.isfinite(value):
            raise invalid("expected finite numbers")
    if low > high:
        raise invalid("low is greater than high")
    if kind == "int":
        if int(low) != low or int(high) != high or low < 1:
            raise invalid("expected positive integers")
        low, high = int(low), int(high)
    if name in ("dropout", "recurrent_dropout") and not 0 <= low <= high < 1:
        raise invalid("expected rates in [0, 1)")
    if name == "learning_rate" and not 0 < low <= high <= 1:
        raise invalid("expected rates in (0, 1]")
    if kind == "float":
        low, high = float(low), float(high)
    return (low, high)
