"""The search space of the tuning command: bounds, overrides, validation.

`SearchSpace` holds one `(low, high)` pair per tuned hyperparameter and the
values tried of the application's categorical options (`choices`);
`SearchSpace.from_overrides` starts from the application's space
(`APP_SPACES`: its defaults and their neighbours) and applies a small JSON
config file, then command-line values, and checks the result:

```json
{"units": [32, 256], "dropout": [0.0, 0.5], "choices": {"pooling": ["max"]}}
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
# The categorical model options each application's search may choose.
CHOICE_OPTIONS = {
    "sentiment": ("pooling", "embedding_dim", "subword_buckets"),
    "speech": ("num_mel_bins", "head_dropout"),
}


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
        choices: Dict of a categorical model option (`CHOICE_OPTIONS`) to
            the non-empty tuple of values tried, e.g.
            `{"pooling": ("max", "last")}`. Defaults to `{}` (none).
    """

    units: tuple = (32, 256)
    num_layers: tuple = (1, 2)
    dropout: tuple = (0.0, 0.5)
    recurrent_dropout: tuple = (0.0, 0.3)
    learning_rate: tuple = (3e-4, 1e-2)
    layer_norm: bool = False
    choices: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name, (kind, _) in BOUNDS.items():
            bounds = getattr(self, name)
            object.__setattr__(self, name, _check_pair(name, kind, bounds))
        if not isinstance(self.layer_norm, bool):
            raise ValueError(
                "Received an invalid value for search space entry "
                f"layer_norm, expected true or false, got {self.layer_norm!r}."
            )
        object.__setattr__(self, "choices", _check_choices(self.choices))

    @classmethod
    def for_app(cls, app):
        """The application's default space (`APP_SPACES[app]`)."""
        if app not in APP_SPACES:
            raise ValueError(
                "Received an invalid value for argument app, expected one "
                f"of {sorted(APP_SPACES)}, got {app!r}."
            )
        return cls(**APP_SPACES[app])

    @classmethod
    def from_overrides(cls, config_file=None, app=None, **overrides):
        """The default space, then `config_file`, then `overrides` on top.

        Args:
            config_file: Path of a JSON object mapping names of `BOUNDS`
                (and `"layer_norm"`) to `[low, high]` (a boolean for
                `layer_norm`, and for `"choices"` an object of option: list
                of values, which replaces the lists of the options it
                names), or `None`. Defaults to `None`.
            app: `"sentiment"` or `"speech"` to start from the application's
                space (`APP_SPACES`), `None` for `SearchSpace()`'s. Defaults
                to `None`.
            **overrides: The same names with `(low, high)` pairs; `None`
                values are ignored.

        Returns:
            A validated `SearchSpace`; its `choices` are checked against
            `CHOICE_OPTIONS[app]` when `app` is given.
        """
        values = {} if app is None else dict(APP_SPACES[app])
        values["choices"] = dict(values.get("choices", {}))
        given = {}
        if config_file is not None:
            given.update(_read_config(config_file))
        given.update({k: v for k, v in overrides.items() if v is not None})
        known = set(BOUNDS) | {"layer_norm", "choices"}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(
                f"Unknown search space entries {unknown}; known entries: "
                f"{sorted(known)}."
            )
        choices = given.pop("choices", {})
        if not isinstance(choices, dict):
            raise ValueError(
                "Received an invalid value for search space entry choices, "
                f"expected an object of option: [values], got {choices!r}."
            )
        values.update(given)
        values["choices"].update(choices)
        space = cls(**values)
        if app is not None:
            space.check_choices_for(app)
        return space

    def check_choices_for(self, app):
        """Raises `ValueError` for a choice the application does not take."""
        unknown = sorted(set(self.choices) - set(CHOICE_OPTIONS[app]))
        if unknown:
            raise ValueError(
                f"Unknown search space choices {unknown} for {app}; it "
                f"chooses among {list(CHOICE_OPTIONS[app])}."
            )

    def to_dict(self):
        return {
            **{name: list(getattr(self, name)) for name in BOUNDS},
            "layer_norm": self.layer_norm,
            "choices": {k: list(v) for k, v in self.choices.items()},
        }


# Each application's space: its defaults (`DEFAULT_OPTIONS`, the preset's
# learning rate) and their neighbours. Speech stays at up to 128 units and 2
# layers: 256 units validated no better in `make sweep`, and with 3 layers
# they make a trial some 5 times slower than the default's.
APP_SPACES = {
    "sentiment": {
        "units": (64, 256),
        "num_layers": (1, 2),
        "dropout": (0.0, 0.4),
        "recurrent_dropout": (0.0, 0.2),
        "learning_rate": (1e-3, 1e-2),
        "choices": {
            "pooling": ("max", "last"),
            "embedding_dim": (128, 256),
            "subword_buckets": (0, 50000),
        },
    },
    "speech": {
        "units": (64, 128),
        "num_layers": (1, 2),
        "dropout": (0.0, 0.3),
        "recurrent_dropout": (0.0, 0.2),
        "learning_rate": (1e-3, 4e-3),
        "choices": {"num_mel_bins": (40, 64), "head_dropout": (0.3, 0.5)},
    },
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


def _check_choices(choices):
    if not isinstance(choices, dict):
        raise ValueError(
            "Received an invalid value for search space entry choices, "
            f"expected an object of option: [values], got {choices!r}."
        )
    checked = {}
    for name, values in choices.items():
        if isinstance(values, (str, bytes, dict)) or not hasattr(
            values, "__len__"
        ):
            values = None
        if not values or any(isinstance(v, (list, dict)) for v in values):
            raise ValueError(
                f"Received an invalid value for search space choice {name}: "
                f"expected a non-empty list of values, got {choices[name]!r}."
            )
        checked[name] = tuple(values)
    return checked


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
