"""Exports for serving: TF Serving SavedModels and the checks they pass.

- `export_for_serving(model, model_base_path)`: a versioned SavedModel that
  TF Serving (or any TensorFlow, no `lstm_keras` needed) runs; see
  `lstm_keras.export.saved_model`.
- `graph_ops`, `nonstandard_ops`, `state_writes`, `describe`: what a written
  SavedModel holds; see `lstm_keras.export.graph`.
- `write_warmup_requests`, `read_warmup_requests`: TF Serving's warm-up
  file; see `lstm_keras.export.warmup`.
- `export_litert(model, path)`: a LiteRT (TensorFlow Lite) file for
  devices, LSTMs as TFLite's fused kernel, optionally quantized; see
  `lstm_keras.export.litert`.
- `load_model_file`, `representative_examples`: what `lstm-keras-export`
  reads; see `lstm_keras.export.model_files`.
"""

from lstm_keras.export.graph import FORBIDDEN_OP_PREFIXES
from lstm_keras.export.graph import SIGNATURE
from lstm_keras.export.graph import STATEFUL_WRITE_OPS
from lstm_keras.export.graph import describe
from lstm_keras.export.graph import graph_ops
from lstm_keras.export.graph import nonstandard_ops
from lstm_keras.export.graph import state_writes
from lstm_keras.export.litert import FullIntegerSpeech
from lstm_keras.export.litert import export_litert
from lstm_keras.export.litert import litert_ops
from lstm_keras.export.litert import sentiment_inputs
from lstm_keras.export.model_files import load_model_file
from lstm_keras.export.model_files import representative_examples
from lstm_keras.export.saved_model import export_for_serving
from lstm_keras.export.saved_model import write_saved_model
from lstm_keras.export.signatures import METADATA_SIGNATURE
from lstm_keras.export.warmup import read_warmup_requests
from lstm_keras.export.warmup import write_warmup_requests

__all__ = [
    "FORBIDDEN_OP_PREFIXES",
    "FullIntegerSpeech",
    "METADATA_SIGNATURE",
    "SIGNATURE",
    "STATEFUL_WRITE_OPS",
    "describe",
    "export_for_serving",
    "export_litert",
    "graph_ops",
    "litert_ops",
    "load_model_file",
    "nonstandard_ops",
    "read_warmup_requests",
    "representative_examples",
    "sentiment_inputs",
    "state_writes",
    "write_saved_model",
    "write_warmup_requests",
]
