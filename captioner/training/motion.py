"""Motion-stream training: a ``captioner data camera`` folder -> motion features -> the loop.

Each clip's motion features are measured once, the way the description measures them
(:func:`captioner.inference.describe.pair_vectors`: every consecutive pair of the clip's
frames read at the activity pipeline's frame size, a pair across a cut measured as nothing),
and cached under the cache root keyed by the split file, the frame size and the feature code.

Four views of every clip are measured from its frames: as rendered, played backwards,
mirrored left to right, and both. A view keeps the clip's labels through a mirror table
(:data:`REVERSED`, :data:`FLIPPED`: a pan left played backwards is a pan right, a thing that
approaches played backwards recedes). Each training step takes a random view of each clip and
a random stretch of its pairs (a shot or a timeline window is shorter than a clip; a window
measures every other pair), so the model reads windows of any length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from captioner.bundle import Manifest, read_spec
from captioner.data.features import default_cache_root
from captioner.files import atomic_write
from captioner.inference import default_bundle_dir, resolve_device
from captioner.inference.describe import PARTNER_GAP_S, pair_vectors
from captioner.models.motion import MotionModel, MotionModelConfig
from captioner.progress import progress_bar
from captioner.training import distributed
from captioner.training.loop import RunConfig, TrainConfig, check_config, fit
from captioner.video import CAMERA_MOTIONS, MOTION_DIM, MOTION_FIELDS, OBJECT_MOTIONS, read_frames

log = logging.getLogger(__name__)

__all__ = [
    "FLIPPED",
    "REVERSED",
    "VIEWS",
    "MotionOptions",
    "MotionTask",
    "clip_views",
    "label_maps",
    "motion_features",
    "object_floor",
    "train_motion",
]

#: Labels that swap when a clip is played backwards (every other label stays).
REVERSED: tuple[tuple[str, str], ...] = (
    ("pan_left", "pan_right"),
    ("tilt_up", "tilt_down"),
    ("zoom_in", "zoom_out"),
    ("left", "right"),
    ("up", "down"),
    ("approach", "recede"),
)
#: Labels that swap when a clip is mirrored left to right (a roll's direction is no label).
FLIPPED: tuple[tuple[str, str], ...] = (("pan_left", "pan_right"), ("left", "right"))
#: The measured views of each clip, in the cache's order: (reversed, flipped).
VIEWS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))
#: Seeds the description's accuracy is measured on (bench/describe_accuracy.py): never train.
EVALUATION_SEEDS = (99, 123)
#: Code the motion features come from: a change to any of it is a new cache.
_FEATURE_CODE = ("video/motion.py", "video/tracking.py", "video/residual.py", "video/shots.py")


def label_map(classes: Sequence[str], pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """(K,) index of each class's label under a mirror given as swapped ``pairs``."""
    index = {name: i for i, name in enumerate(classes)}
    table = torch.arange(len(classes))
    for a, b in pairs:
        if a in index and b in index:
            table[index[a]], table[index[b]] = index[b], index[a]
    return table


def label_maps(classes: Sequence[str]) -> torch.Tensor:
    """(len(VIEWS), K): the label a clip of each class has in each view."""
    rev, flip = label_map(classes, REVERSED), label_map(classes, FLIPPED)
    ident = torch.arange(len(classes))
    return torch.stack([(rev if r else ident)[flip if f else ident] for r, f in VIEWS])


def clip_views(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB frames -> (len(VIEWS), T-1, MOTION_DIM): each view's consecutive pairs
    measured as the description measures them."""
    out = []
    for reverse, flip in VIEWS:
        f = frames[::-1] if reverse else frames
        f = np.ascontiguousarray(f[:, :, ::-1] if flip else f)
        out.append(pair_vectors(f[:-1], f[1:]))
    return np.stack(out)


# ----------------------------------------------------------------------------- feature cache


def _clip_features(job: tuple[str, int, int]) -> np.ndarray:
    path, frames, size = job
    decoded, _ = read_frames(path, list(range(frames)), size)
    return clip_views(decoded)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _cache_key(split_file: Path, size: int) -> str:
    h = hashlib.sha256(split_file.read_bytes())
    h.update(json.dumps([size, list(MOTION_FIELDS), list(VIEWS)]).encode())
    root = Path(__file__).resolve().parents[1]
    for name in _FEATURE_CODE:
        h.update((root / name).read_bytes())
    return h.hexdigest()[:20]


def motion_features(
    data: str | os.PathLike,
    split: str,
    size: int,
    cache_root: Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """A camera folder's ``split`` -> (N, len(VIEWS), T-1, MOTION_DIM) float32 features and
    the split's clip records, measured once and then read from the cache."""
    root = Path(data)
    split_file = root / f"{split}.json"
    if not split_file.is_file():
        raise FileNotFoundError(
            f"{split_file} not found: --data must be a folder written by 'captioner data camera'"
        )
    payload = json.loads(split_file.read_text())
    clips, info = payload["clips"], payload["info"]
    if info.get("seed") in EVALUATION_SEEDS:
        log.warning(
            "%s was rendered with seed %s, a seed the description is evaluated on "
            "(bench/describe_accuracy.py): figures measured there will not be honest",
            split_file,
            info["seed"],
        )
    folder = (cache_root or default_cache_root()) / "motion"
    cache = folder / f"{split}-{_cache_key(split_file, size)}.safetensors"
    if cache.is_file():
        return load_file(str(cache))["features"], clips
    jobs = [(str(root / c["path"]), int(info["frames"]), size) for c in clips]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")  # OpenCV's pool does not survive fork
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
        rows = pool.map(_clip_features, jobs, chunksize=8)
    else:
        pool, rows = None, map(_clip_features, jobs)
    try:
        bar = progress_bar(rows, total=len(jobs), desc=f"motion {split}", unit="clip",
                           enabled=progress)  # fmt: skip
        features = torch.from_numpy(np.stack(list(bar))) if jobs else torch.zeros(0)
    finally:
        if pool is not None:
            pool.shutdown()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda tmp: save_file({"features": features.contiguous()}, str(tmp)))
    log.info("motion features of %d %s clips cached in %s", len(clips), split, cache)
    return features, clips


# ----------------------------------------------------------------------------- the task


def _labels(clips: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    camera = torch.tensor([CAMERA_MOTIONS.index(c["camera"]) for c in clips], dtype=torch.long)
    obj = torch.tensor([OBJECT_MOTIONS.index(c["object"]) for c in clips], dtype=torch.long)
    return camera, obj


class MotionTask:
    """Cached clip views for :func:`captioner.training.loop.fit`: per step a random view and a
    random stretch of each clip's pairs (one length per batch)."""

    metric_names = ("top1", "camera_top1", "object_top1", "moving_object_top1")

    def __init__(
        self,
        model: MotionModel,
        train: tuple[torch.Tensor, list[dict[str, Any]]],
        val: tuple[torch.Tensor, list[dict[str, Any]]],
        device: torch.device,
        batch_size: int = 64,
        seed: int = 0,
        min_pairs: int = 2,
    ):
        self.model, self.device, self.batch_size, self.seed = model, device, batch_size, seed
        self.features, clips = train  # (N, V, P, D)
        self.camera, self.object = _labels(clips)
        self.val_features = val[0][:, 0]  # as rendered, every pair: (M, P, D)
        self.val_camera, self.val_object = _labels(val[1])
        self.val_moving = torch.tensor([bool(c["moves"]) and c["object"] != "none" for c in val[1]])
        self.camera_views = label_maps(CAMERA_MOTIONS)
        self.object_views = label_maps(OBJECT_MOTIONS)
        self.min_pairs = max(1, min(min_pairs, self.features.size(2)))
        self.net: torch.nn.Module = model  # what loss() calls: fit() puts DDP here under torchrun

    def num_batches(self) -> int:
        share = math.ceil(len(self.camera) / distributed.current().size)
        return math.ceil(share / self.batch_size)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        world = distributed.current()
        g = torch.Generator().manual_seed((self.seed * 1000 + epoch) * world.size + world.rank)
        rnd = random.Random(int(torch.randint(2**31, (1,), generator=g)))
        order = torch.tensor(distributed.epoch_order(len(self.camera), self.seed, epoch))
        pairs = self.features.size(2)
        for s in range(0, len(order), self.batch_size):
            rows = order[s : s + self.batch_size]
            view = torch.randint(len(VIEWS), (len(rows),), generator=g)
            feats = self.features[rows, view]  # (B, P, D)
            if rnd.random() < 0.3:  # a timeline window: every other pair
                feats = feats[:, rnd.randrange(2) :: 2]
            length = feats.size(1)
            if rnd.random() >= 0.4:  # a stretch, as a shot is; else the whole clip
                length = rnd.randint(min(self.min_pairs, length), length)
            start = torch.randint(feats.size(1) - length + 1, (len(rows),), generator=g)
            steps = start[:, None] + torch.arange(length)[None]  # (B, L)
            feats = feats.gather(1, steps[..., None].expand(-1, -1, feats.size(-1)))
            camera = self.camera_views[view, self.camera[rows]]
            obj = self.object_views[view, self.object[rows]]
            assert feats.shape[1] <= pairs
            yield feats.to(self.device), camera.to(self.device), obj.to(self.device)

    def loss(self, batch: tuple[torch.Tensor, ...], epoch: int) -> torch.Tensor:
        feats, camera, obj = batch
        return self.net(feats, camera, obj).loss

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        camera, obj = self.model.probabilities(self.val_features.to(self.device))
        cam_ok = (camera.argmax(-1).cpu() == self.val_camera).float()
        obj_ok = (obj.argmax(-1).cpu() == self.val_object).float()
        moving = obj_ok[self.val_moving]
        out = {
            "camera_top1": float(cam_ok.mean()),
            "object_top1": float(obj_ok.mean()),
            "moving_object_top1": float(moving.mean()) if len(moving) else 0.0,
        }
        return {"top1": (out["camera_top1"] + out["object_top1"]) / 2, **out}


#: Most claims of a moving thing a trained model may make on the validation clips where
#: nothing moves (every view), at its object floor.
FALSE_MOTION_SHARE = 0.025
_FLOORS = tuple(round(0.40 + 0.05 * k, 2) for k in range(12))  # 0.40 .. 0.95


@torch.inference_mode()
def object_floor(
    model: MotionModel, val: tuple[torch.Tensor, list[dict[str, Any]]], device: torch.device
) -> dict[str, Any]:
    """The lowest object probability at which the model's object motion is evidence enough to
    be said (hedged): the least floor on a 0.05 grid from the sentence's own 0.40 at which its
    claims of a motion on the validation clips where nothing moves (all four views) stay at
    most :data:`FALSE_MOTION_SHARE`. The reader maps that floor onto the sentence's hedge
    line, so a weaker reading is left unsaid."""
    model.eval()
    feats, clips = val
    still = [i for i, c in enumerate(clips) if not c["moves"] or c["object"] == "none"]
    if not still:
        return {"object_floor": _FLOORS[0], "still_clips": 0}
    x = feats[still].flatten(0, 1).to(device)  # (S * V, P, D)
    _, obj = model.probabilities(x)
    score, label = obj.cpu().max(-1)
    claimed = score[label != OBJECT_MOTIONS.index("none")]
    share = {f: float((claimed >= f).sum()) / len(x) for f in _FLOORS}
    floor = next((f for f in _FLOORS if share[f] <= FALSE_MOTION_SHARE), _FLOORS[-1])
    return {
        "object_floor": floor,
        "still_clips": len(still),
        "false_motion_share": round(share[floor], 4),
        "false_motion_share_at_0.40": round(share[_FLOORS[0]], 4),
    }


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class MotionOptions:
    """Model shape and data options for motion training."""

    embed_dim: int = 64
    hidden_dim: int = 64
    layers: int = 1
    rnn: str = "gru"
    bidirectional: bool = True
    dropout: float = 0.1
    batch_size: int = 64
    frame_size: int | None = None  # None: the shipped activity pipeline's frame size
    train_split: str = "train"
    val_split: str = "val"


def pipeline_frame_size() -> int:
    """The size the activity pipeline reads frames at (its encoder's input): the shipped
    activity bundle's, else 128."""
    try:
        entry = read_spec(default_bundle_dir("activity")).encoder
    except (OSError, ValueError):
        return 128
    return entry.preprocess.size if entry is not None else 128


def train_motion(
    data: str | os.PathLike,
    out: str | os.PathLike,
    opts: MotionOptions | None = None,
    run: RunConfig | None = None,
) -> Path:
    """Train a motion model on a ``captioner data camera`` folder and write a bundle (``run``:
    device, seed, epochs, cache root, workers ...; monitor default ``top1``, the mean of the
    camera and object top-1 on the validation split)."""
    opts = opts or MotionOptions()
    run = run or RunConfig()
    cfg = run.train_cfg or TrainConfig(monitor="top1", lr=2e-3, epochs=60, patience=12)
    check_config(cfg, MotionTask.metric_names)
    _, dev = distributed.setup(resolve_device(run.device))
    size = opts.frame_size or pipeline_frame_size()
    common = {"cache_root": run.cache_root, "workers": run.workers, "progress": cfg.progress}
    with distributed.main_first():  # rank 0 fills the caches; the others then read them
        train = motion_features(data, opts.train_split, size, **common)
        val = motion_features(data, opts.val_split, size, **common)
    if len(train[1]) == 0 or len(val[1]) == 0:
        raise ValueError(f"{data}: the {opts.train_split} and {opts.val_split} splits need clips")
    config = MotionModelConfig(
        input_dim=MOTION_DIM,
        camera_classes=len(CAMERA_MOTIONS),
        object_classes=len(OBJECT_MOTIONS),
        embed_dim=opts.embed_dim,
        hidden_dim=opts.hidden_dim,
        layers=opts.layers,
        rnn=opts.rnn,
        bidirectional=opts.bidirectional,
        dropout=opts.dropout,
    )
    torch.manual_seed(cfg.seed)
    model = MotionModel(config)
    model.set_normalization(train[0])
    task = MotionTask(model, train, val, dev, opts.batch_size, cfg.seed)
    result = fit(task, cfg, out, dev, resume=run.resume)
    model.load_state_dict(result.best_state)
    said = object_floor(model, val, dev)
    log.info("object motion said from probability %.2f (%s)", said["object_floor"], said)
    manifest = Manifest(
        task="motion",
        name=run.name or "motion",
        version="1",
        encoder=None,
        model=config.to_dict(),
        heads={"camera": list(CAMERA_MOTIONS), "object": list(OBJECT_MOTIONS)},
        inputs={
            "features": "captioner.video.motion",
            "fields": list(MOTION_FIELDS),
            "frame_size": size,
            "pair_gap_s": PARTNER_GAP_S,
        },
        training={
            "data": {
                "folder": str(data),
                "train_clips": len(train[1]),
                "val_clips": len(val[1]),
                "seeds": sorted({_split_seed(data, s) for s in (opts.train_split, opts.val_split)}),
                "views": [{"reversed": r, "flipped": f} for r, f in VIEWS],
            },
            "command": run.command or "",
            "config": cfg.to_dict(),
            "options": asdict(opts),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
        },
        metrics={"val": result.best_metrics},
        extra={"said": said},
    )
    return distributed.save_bundle_on_main(out, manifest, {"model.safetensors": result.best_state})


def _split_seed(data: str | os.PathLike, split: str) -> int | None:
    return json.loads((Path(data) / f"{split}.json").read_text())["info"].get("seed")
