"""``captioner data`` and ``captioner train``: make data, train bundles."""

from __future__ import annotations

import argparse
import json

from captioner.cli import data_camera, data_objects, data_photos
from captioner.cli.options import (
    add_run_options,
    non_negative,
    positive,
    report_bundle,
    training_run,
)


def add_data(sub) -> None:
    p = sub.add_parser("data", help="generate synthetic datasets")
    dsub = p.add_subparsers(dest="dataset", required=True)
    s = dsub.add_parser(
        "scenes",
        help="synthetic captioning scenes (COCO captions format)",
        description="Write DIR/{train,val,test,novel}.json and DIR/images/ from a seed.",
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    s.add_argument("--n-train", type=non_negative, default=8000, help="training images")
    s.add_argument("--n-val", type=non_negative, default=500, help="validation images")
    s.add_argument("--n-test", type=non_negative, default=1000, help="test images")
    s.add_argument(
        "--n-novel", type=non_negative, default=500, help="images of held-out combinations"
    )
    s.add_argument("--image-size", type=positive, default=224, help="image side, pixels")
    s.set_defaults(func=_cmd_scenes)
    m = dsub.add_parser(
        "motion",
        help="synthetic motion clips (folder per class)",
        description="Write DIR/{train,val,test}/<class>/*.mp4: short clips whose class depends "
        "on temporal order (moving left/right/up/down, growing/shrinking, rotating, static).",
    )
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    m.add_argument("--n-per-class", type=positive, default=60, help="training clips per class")
    m.add_argument("--n-val-per-class", type=positive, help="default: n-per-class / 4")
    m.add_argument("--n-test-per-class", type=positive, help="default: n-per-class / 4")
    m.add_argument("--frames", type=positive, default=24, help="frames per clip")
    m.add_argument("--fps", type=positive, default=12, help="frame rate of the written clips")
    m.add_argument("--size", type=positive, default=128, help="frame side, pixels")
    m.set_defaults(func=_cmd_motion)
    data_objects.add_objects(dsub)
    data_photos.add_photos(dsub)
    data_camera.add_camera(dsub)


def _cmd_scenes(args: argparse.Namespace) -> int:
    from captioner.data.scenes import generate_scenes

    paths = generate_scenes(
        args.out, args.seed, args.n_train, args.n_val, args.n_test, args.n_novel, args.image_size
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def _cmd_motion(args: argparse.Namespace) -> int:
    from captioner.data.motion import generate_motion

    paths = generate_motion(
        args.out,
        args.seed,
        args.n_per_class,
        args.n_val_per_class,
        args.n_test_per_class,
        frames=args.frames,
        fps=args.fps,
        size=args.size,
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model and write a bundle")
    tsub = p.add_subparsers(dest="task", required=True)
    c = tsub.add_parser(
        "caption",
        help="train a caption decoder",
        description="Train an attention-LSTM caption decoder on a frozen encoder's cached "
        "features. Annotations: COCO captions JSON, Karpathy split JSON, CSV or JSONL.",
    )
    c.add_argument("--data", required=True, help="training annotations")
    c.add_argument("--val", required=True, help="validation annotations")
    c.add_argument("--images", required=True, help="folder the annotation file names are under")
    c.add_argument("--val-images", help="images folder for --val (default: --images)")
    c.add_argument("--train-split", help="Karpathy split for --data (train includes restval)")
    c.add_argument("--val-split", help="Karpathy split for --val")
    c.add_argument("--out", required=True, help="bundle folder to write")
    c.add_argument("--encoder", default="efficientnet_lite0", help="registered encoder name")
    c.add_argument("--embed-dim", type=positive, default=256, help="word embedding size")
    c.add_argument("--hidden-dim", type=positive, default=512, help="LSTM state size")
    c.add_argument("--attention-dim", type=positive, default=256, help="attention MLP size")
    c.add_argument("--proj-dim", type=positive, default=512, help="feature projection size")
    c.add_argument("--dropout", type=float, default=0.5, help="dropout before the word layer")
    c.add_argument("--alpha-c", type=float, default=1.0, help="doubly stochastic attention weight")
    c.add_argument("--no-attention", action="store_true", help="NIC variant (Show and Tell)")
    c.add_argument(
        "--no-positions",
        action="store_true",
        help="no grid-cell position embeddings (the original Show, Attend and Tell)",
    )
    c.add_argument("--min-count", type=positive, default=5, help="vocabulary threshold")
    c.add_argument(
        "--max-len", type=positive, default=20, help="longest training caption kept, in words"
    )
    c.add_argument("--beam-size", type=positive, default=3, help="beam for validation")
    c.add_argument(
        "--scheduled-sampling", type=float, default=0.0, help="max prob. of feeding own guesses"
    )
    c.add_argument(
        "--fine-tune-blocks",
        type=non_negative,
        default=0,
        help="also train the encoder's last N blocks (slower: no feature cache)",
    )
    add_run_options(c, epochs=20, batch_size=64, lr=4e-4, patience=5, name="captioner")
    c.set_defaults(func=_cmd_train_caption)

    a = tsub.add_parser(
        "activity",
        help="train a video activity model (LSTM over CNN frame grids)",
        description="Train an LRCN-style activity model on frame features of a frozen encoder. "
        "Data: a folder per class, a CSV (path,label) or UCF101 with --train-list.",
    )
    a.add_argument("--data", required=True, help="training videos (folder per class, or CSV)")
    a.add_argument("--val", required=True, help="validation videos (folder per class, or CSV)")
    a.add_argument("--train-list", help="UCF101 trainlistNN.txt (paths relative to --data)")
    a.add_argument("--val-list", help="UCF101 testlistNN.txt (paths relative to --val)")
    a.add_argument("--out", required=True, help="bundle folder to write")
    a.add_argument("--encoder", default="efficientnet_lite0", help="registered encoder name")
    a.add_argument("--frames", type=positive, default=16, help="frames sampled per clip")
    a.add_argument(
        "--train-samples", type=positive, default=2, help="cached clips per training video (TSN)"
    )
    a.add_argument("--head", choices=("rnn", "mean"), default="rnn", help="mean: the baseline")
    a.add_argument(
        "--image-size", type=positive, help="encoder input size for frames (default: 224)"
    )
    a.add_argument(
        "--reverse-pairs",
        help="time-reversal augmentation: 'a/b,...' where a clip of a played backwards is a "
        "clip of b ('s/s' for a class that looks the same both ways; 'motion+static' for the "
        "synthetic motion classes)",
    )
    a.add_argument("--rnn", choices=("lstm", "gru"), default="lstm", help="recurrent cell")
    a.add_argument("--layers", type=positive, default=1, help="recurrent layers")
    a.add_argument("--hidden-dim", type=positive, default=256, help="recurrent state size")
    a.add_argument("--embed-dim", type=positive, default=256, help="frame embedding size")
    a.add_argument("--grid", type=positive, default=3, help="cells per side kept per frame")
    a.add_argument("--cell-dim", type=positive, default=32, help="size kept per grid cell")
    a.add_argument("--bidirectional", action="store_true", help="read the frames both ways")
    a.add_argument("--dropout", type=float, default=0.3, help="dropout before the classifier")
    add_run_options(a, epochs=30, batch_size=16, lr=1e-3, patience=8, name="activity")
    a.set_defaults(func=_cmd_train_activity)
    _add_train_motion(tsub)


def _add_train_motion(tsub) -> None:
    m = tsub.add_parser(
        "motion",
        help="train the motion stream (camera and object motion from motion features)",
        description="Train a small GRU/LSTM over the per-pair motion features of clips "
        "rendered by 'captioner data camera' (DIR/train.json, DIR/val.json): a camera head and "
        "an object-motion head. Features are measured once per clip (played forwards and "
        "backwards, as rendered and mirrored) and cached.",
    )
    m.add_argument("--data", required=True, help="a 'captioner data camera' output folder")
    m.add_argument("--out", required=True, help="bundle folder to write")
    m.add_argument("--train-split", default="train", help="split file DATA/SPLIT.json to train on")
    m.add_argument("--val-split", default="val", help="split to validate and stop early on")
    m.add_argument(
        "--frame-size",
        type=positive,
        help="pixels frames are read at (default: the shipped activity model's input size, "
        "the size the description measures motion at)",
    )
    m.add_argument("--rnn", choices=("gru", "lstm"), default="gru", help="recurrent cell")
    m.add_argument("--layers", type=positive, default=1, help="recurrent layers")
    m.add_argument("--hidden-dim", type=positive, default=64, help="recurrent state size")
    m.add_argument("--embed-dim", type=positive, default=64, help="per-pair embedding size")
    m.add_argument(
        "--one-way", action="store_true", help="read the pairs forwards only (not both ways)"
    )
    m.add_argument("--dropout", type=float, default=0.1, help="dropout before the heads")
    add_run_options(m, epochs=60, batch_size=64, lr=2e-3, patience=12, name="motion")
    m.set_defaults(func=_cmd_train_motion)


def _cmd_train_caption(args: argparse.Namespace) -> int:
    from captioner.training.caption import CaptionModelOptions, train_caption
    from captioner.training.loop import RunConfig

    opts = CaptionModelOptions(
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        attention_dim=args.attention_dim,
        proj_dim=args.proj_dim,
        dropout=args.dropout,
        attention=not args.no_attention,
        positions=not args.no_positions,
        alpha_c=args.alpha_c,
        min_count=args.min_count,
        max_len=args.max_len,
        beam_size=args.beam_size,
        scheduled_sampling=args.scheduled_sampling,
        batch_size=args.batch_size,
        fine_tune_blocks=args.fine_tune_blocks,
    )
    out = train_caption(
        args.data,
        args.val,
        args.images,
        args.out,
        val_images=args.val_images,
        train_split=args.train_split,
        val_split=args.val_split,
        model_opts=opts,
        run=RunConfig(**training_run(args, "CIDEr-D")),
    )
    return report_bundle(out)


def _cmd_train_activity(args: argparse.Namespace) -> int:
    from captioner.training.activity import ActivityOptions, parse_pairs, train_activity
    from captioner.training.loop import RunConfig

    opts = ActivityOptions(
        num_frames=args.frames,
        train_samples=args.train_samples,
        grid=args.grid,
        cell_dim=args.cell_dim,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        layers=args.layers,
        rnn=args.rnn,
        bidirectional=args.bidirectional,
        head=args.head,
        dropout=args.dropout,
        batch_size=args.batch_size,
        image_size=args.image_size,
        reverse_pairs=tuple(parse_pairs(args.reverse_pairs)) if args.reverse_pairs else (),
    )
    out = train_activity(
        args.data,
        args.val,
        args.out,
        train_list=args.train_list,
        val_list=args.val_list,
        opts=opts,
        run=RunConfig(**training_run(args, "top1")),
    )
    return report_bundle(out)


def _cmd_train_motion(args: argparse.Namespace) -> int:
    from captioner.training.loop import RunConfig
    from captioner.training.motion import MotionOptions, train_motion

    opts = MotionOptions(
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        layers=args.layers,
        rnn=args.rnn,
        bidirectional=not args.one_way,
        dropout=args.dropout,
        batch_size=args.batch_size,
        frame_size=args.frame_size,
        train_split=args.train_split,
        val_split=args.val_split,
    )
    out = train_motion(args.data, args.out, opts, RunConfig(**training_run(args, "top1")))
    return report_bundle(out)
