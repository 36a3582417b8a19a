"""The feature cache survives a torn ``done.npy`` and names unreadable files sparingly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from captioner.data.features import FeatureCache, build_feature_cache


class Items(Dataset):
    """Item i is a 2x2 'image' filled with i; items in ``bad`` are unreadable."""

    def __init__(self, n: int, bad: frozenset[int] = frozenset()):
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        error = f"item {i} is broken" if i in self.bad else ""
        return {"index": i, "image": torch.full((2, 2), float(i)), "error": error}


def build(folder: Path, n: int = 6, bad: frozenset[int] = frozenset()) -> FeatureCache:
    calls.clear()
    return build_feature_cache(
        lambda x: calls.append(len(x)) or x.mean(dim=(1, 2), keepdim=True).squeeze(-1),
        Items(n, bad),
        [f"k{i}" for i in range(n)],
        folder,
        item_shape=(1,),
        meta={"encoder": "toy"},
        batch_size=4,
        workers=0,
        progress=False,
    )


calls: list[int] = []


def test_a_torn_done_file_means_nothing_done_not_a_crash(tmp_path: Path) -> None:
    cache = build(tmp_path / "c")
    assert all(f"k{i}" in cache for i in range(6))
    assert sum(calls) == 6
    done = tmp_path / "c" / "done.npy"
    done.write_bytes(done.read_bytes()[:20])  # killed while writing
    assert not any(f"k{i}" in FeatureCache(tmp_path / "c") for i in range(6))
    cache = build(tmp_path / "c")  # the next run encodes again instead of failing
    assert sum(calls) == 6
    assert all(f"k{i}" in cache for i in range(6))
    assert float(cache["k5"][0]) == 5.0
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_many_unreadable_items_get_one_summary(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="captioner.data.features")
    cache = build(tmp_path / "c", n=20, bad=frozenset(range(1, 20)))
    assert "k0" in cache
    assert "k3" not in cache
    named = [r for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(named) == 3
    assert any("19 of 20 items could not be read" in r.getMessage() for r in caplog.records)


def test_done_flags_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    real = np.save
    seen: list[str] = []

    def spy(file, arr, *a, **k):
        seen.append(getattr(file, "name", str(file)))
        return real(file, arr, *a, **k)

    monkeypatch.setattr(np, "save", spy)
    build(tmp_path / "c")
    assert seen
    assert all(name.endswith(".tmp") for name in seen)
