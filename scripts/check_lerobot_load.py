#!/usr/bin/env python3
"""Loads a dataset written by `lapa sim record` with LeRobot's own LeRobotDataset and checks it.

One-time interoperability check (not part of CI: LeRobot pulls in torch, several GB):

    python3 -m venv /tmp/lr && /tmp/lr/bin/pip install lerobot
    /tmp/lr/bin/python scripts/check_lerobot_load.py out/quickstart/sim-arm out/quickstart/sim-hand

It opens each folder offline with `LeRobotDataset(repo_id, root=DIR)`, indexes frames across
episode boundaries, decodes video through LeRobot's torchcodec backend, and compares the task
string, frame/episode indices, and (for the arm) state and action with what the parquet files hold.
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

try:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402
except ImportError:  # older layout
    from lerobot.common.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def check(root: Path) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    ds = LeRobotDataset(f"lapa/{root.name}", root=root, video_backend="torchcodec")
    assert ds.num_episodes == info["total_episodes"], (ds.num_episodes, info["total_episodes"])
    assert ds.num_frames == info["total_frames"], (ds.num_frames, info["total_frames"])
    table = pq.read_table(root / "data/chunk-000/file-000.parquet").to_pydict()
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pandas()
    key = "observation.images.front"
    h, w, _ = info["features"][key]["shape"]
    # First, last and episode-boundary frames.
    ends = sorted({0, ds.num_frames - 1} | {int(i) for i in ds.meta.episodes["dataset_from_index"]})
    for i in ends:
        item = ds[i]
        assert item[key].shape == (3, h, w), item[key].shape
        assert 0.0 <= float(item[key].min()) and float(item[key].max()) <= 1.0
        assert int(item["frame_index"]) == table["frame_index"][i]
        assert int(item["episode_index"]) == table["episode_index"][i]
        assert item["task"] == tasks.index[table["task_index"][i]], (item["task"], table["task_index"][i])
        assert isinstance(item["task"], str) and not item["task"].isdigit()
        if "action" in info["features"]:
            assert torch.allclose(item["action"], torch.tensor(table["action"][i])), i
            assert torch.allclose(item["observation.state"], torch.tensor(table["observation.state"][i])), i
    print(f"OK {root}: {ds.num_episodes} episodes, {ds.num_frames} frames, task[0]={ds[0]['task']!r}, "
          f"image {tuple(ds[0][key].shape)}, features {sorted(ds.features)}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        check(Path(arg))
