"""Caches a synthetic dataset to ArrayRecord shards, resumably (the CLI's writer).

``python -m gshead_jax.data.synthetic --out DIR ...`` calls `write_dataset`.
Records go in index order (`synthetic.SyntheticConfig.ids`), ``records_per_shard``
per shard; a shard is written whole or not at all (`arrayrecord.ShardWriter`),
so a stopped run restarts at its first unfinished shard.
"""

from __future__ import annotations

import dataclasses
import json
import os

from tqdm import tqdm

from gshead_jax.data import arrayrecord
from gshead_jax.data.synthetic import SyntheticConfig, SyntheticSource

_CONFIG_FILE = "synthetic.json"


def write_dataset(
    out_dir: str,
    config: SyntheticConfig,
    *,
    records_per_shard: int = 256,
    batch: int = 1,
    backend: str = "xla",
    image_codec: str = "raw",
    progress: bool = True,
) -> dict:
    """Renders a synthetic dataset into ArrayRecord shards; resumable; returns the manifest.

    Finished shards (those with a sidecar, `arrayrecord.completed_shards`) are
    kept and skipped; ``synthetic.json`` in ``out_dir`` holds the config and a
    rerun with a different one is refused.

    Args:
      out_dir: Dataset directory.
      config: The dataset.
      records_per_shard: Records per shard.
      batch: Frames per render call; 1 renders exactly as ``SyntheticSource[i]``
        does (bit-identical records), more uses the vmapped `render_batch`.
      backend: Rasterizer backend.
      image_codec: ``raw`` or ``png``.
      progress: Show a tqdm bar.
    """
    if records_per_shard < 1 or batch < 1:
        raise ValueError(
            f"records_per_shard and batch must be >= 1, got {records_per_shard}, {batch}"
        )
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = os.path.join(out_dir, _CONFIG_FILE)
    wanted = {"config": dataclasses.asdict(config), "records_per_shard": records_per_shard}
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            found = json.load(f)
        if found != wanted:
            raise ValueError(
                f"{out_dir} holds a synthetic dataset made with {found}; refusing to resume it "
                f"with {wanted} (use another --out)"
            )
    else:
        with open(cfg_path + ".tmp", "w") as f:
            json.dump(wanted, f, indent=1)
        os.replace(cfg_path + ".tmp", cfg_path)
    src = SyntheticSource(config, backend=backend)
    n = len(src)
    num_shards = -(-n // records_per_shard)
    done = set(arrayrecord.completed_shards(out_dir))
    todo = [s for s in range(num_shards) if s not in done]
    bar = tqdm(
        total=n,
        initial=n - sum(min(records_per_shard, n - s * records_per_shard) for s in todo),
        unit="frame",
        disable=not progress,
        desc=f"synthetic -> {out_dir}",
    )
    for s in todo:
        idx = list(range(s * records_per_shard, min((s + 1) * records_per_shard, n)))
        with arrayrecord.ShardWriter(
            out_dir,
            s,
            source_kind="synthetic",
            image_codec=image_codec,
            image_size=config.image_size,
            param_sizes=src.param_sizes,
        ) as writer:
            for lo in range(0, len(idx), batch):
                chunk = idx[lo : lo + batch]
                padded = chunk + [chunk[-1]] * (batch - len(chunk))  # one compiled shape
                records = src.render(padded, batch=batch > 1)[: len(chunk)]
                for r in records:
                    writer.add(r)
                bar.update(len(chunk))
    bar.close()
    return arrayrecord.finalize(out_dir, extra={"synthetic": wanted})
