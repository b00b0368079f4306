"""Bulk prediction: scene graphs of a whole corpus into Parquet / JSONL shards, resumable, on many processes.

    >>> from egtr import Predictor
    >>> from egtr.bulk import BulkOptions, Corpus, predict_corpus
    >>> predictor = Predictor.from_pretrained("model", device="cpu")
    >>> corpus = Corpus(input_lists=("images.csv",), tar_shards=("shards/000.tar",)).check()
    >>> predict_corpus(predictor, corpus, BulkOptions(out="graphs", output_format="parquet"))

`egtr predict --output-format parquet ...` is the command-line form; docs/bulk.md describes layout, resumption,
distributed runs and querying.
"""

from typing import Any

from egtr.bulk.launch import lightning_devices
from egtr.bulk.query import triplets_view
from egtr.bulk.sources import BulkInputError, Corpus, split_inputs
from egtr.bulk.writers import OUTPUT_FORMATS, OutputFolder, record_schema

_RUNNER = ("BulkOptions", "BulkSummary", "bulk_settings", "predict_corpus")


def __getattr__(name: str) -> Any:
    # The runner imports Lightning (seconds); `egtr predict` in its default mode only needs the input readers.
    if name in _RUNNER:
        from egtr.bulk import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'egtr.bulk' has no attribute {name!r}")


__all__ = [
    "OUTPUT_FORMATS",
    "BulkInputError",
    "BulkOptions",
    "BulkSummary",
    "Corpus",
    "OutputFolder",
    "bulk_settings",
    "lightning_devices",
    "predict_corpus",
    "record_schema",
    "split_inputs",
    "triplets_view",
]
