"""gshead_jax.data: frame records, sources and grain pipelines of (source, target) pairs.

records      the record schema, its checks and its one-blob serialisation
source       FrameIndex, the FrameSource protocol, InMemorySource
tracked      GAGAvatar's tracked layout (img_lmdb + optim.pkl + dataset.json), CLI convert
synthetic    the synthetic head dataset (SyntheticSource, CLI), the embedded default
arrayrecord  the project's layout: ArrayRecord shards + manifest.json
pairs        pair rules (same clip, cross identity, multi view)
pipeline     train/eval pipelines, device placement, Orbax checkpoint args

from gshead_jax.data import ArrayRecordSource, train_pipeline, device_batch
"""

from gshead_jax.data.arrayrecord import ArrayRecordSource, write_dataset
from gshead_jax.data.pipeline import (
    device_batch,
    eval_pipeline,
    restore_args,
    save_args,
    train_pipeline,
)
from gshead_jax.data.records import BadRecordError, check_record, decode_record, encode_record
from gshead_jax.data.source import FrameIndex, FrameSource, InMemorySource
from gshead_jax.data.synthetic import SyntheticConfig, SyntheticSource
from gshead_jax.data.tracked import TrackedSource

__all__ = [
    "ArrayRecordSource",
    "BadRecordError",
    "FrameIndex",
    "FrameSource",
    "InMemorySource",
    "SyntheticConfig",
    "SyntheticSource",
    "TrackedSource",
    "check_record",
    "decode_record",
    "device_batch",
    "encode_record",
    "eval_pipeline",
    "restore_args",
    "save_args",
    "train_pipeline",
    "write_dataset",
]
