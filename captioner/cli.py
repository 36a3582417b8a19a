"""The ``captioner`` command: caption folders, generate data, train and evaluate."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

log = logging.getLogger("captioner")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return n


def _shard(value: str):
    from captioner.shard import Shard

    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


SHARD_HELP = (
    "do only shard I of N (0-based; a contiguous block of the inputs) and write "
    "OUT.part-I-of-N.jsonl; join the parts with 'captioner merge'. Under torchrun the shard is "
    "RANK/WORLD_SIZE and rank 0 merges into --out"
)


def _add_caption(sub) -> None:
    p = sub.add_parser(
        "caption",
        help="caption image files, folders (recursive) or globs",
        description="Caption images with a caption bundle (default: the shipped model in "
        "weights/). Writes one JSON record per input: {path, caption, log_prob} or {path, error}.",
    )
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or globs")
    p.add_argument("--bundle", help="caption bundle folder (default: weights/caption-default)")
    p.add_argument("--beam-size", type=_positive, help="beam width (default: the bundle's)")
    p.add_argument("--n-best", type=_positive, default=1, help="alternatives per image (<= beam)")
    p.add_argument("--max-len", type=_positive, help="maximum caption length in words")
    p.add_argument("--batch-size", type=_positive, default=16, help="images per model batch")
    p.add_argument(
        "--workers", type=_non_negative, default=2, help="image decoding processes (0 = in-process)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", help="output .jsonl or .csv (default: JSON lines on stdout)")
    p.add_argument(
        "--resume", action="store_true", help="skip inputs already in --out and append to it"
    )
    p.add_argument("--shard", type=_shard, metavar="I/N", help=SHARD_HELP)
    p.set_defaults(func=_cmd_caption)


def _cmd_caption(args: argparse.Namespace) -> int:
    from functools import partial

    from captioner.batch import caption_files
    from captioner.shard import run_sharded

    job = partial(
        caption_files,
        args.paths,
        bundle=args.bundle,
        beam_size=args.beam_size,
        n_best=args.n_best,
        max_len=args.max_len,
        batch_size=args.batch_size,
        workers=args.workers,
        resume=args.resume,
    )
    return run_sharded(job, args.out, args.shard, args.device)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="generate synthetic datasets")
    dsub = p.add_subparsers(dest="dataset", required=True)
    s = dsub.add_parser(
        "scenes",
        help="synthetic captioning scenes (COCO captions format)",
        description="Write DIR/{train,val,test,novel}.json and DIR/images/ from a seed.",
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-train", type=_non_negative, default=8000)
    s.add_argument("--n-val", type=_non_negative, default=500)
    s.add_argument("--n-test", type=_non_negative, default=1000)
    s.add_argument("--n-novel", type=_non_negative, default=500)
    s.add_argument("--image-size", type=_positive, default=224)
    s.set_defaults(func=_cmd_scenes)
    m = dsub.add_parser(
        "motion",
        help="synthetic motion clips (folder per class)",
        description="Write DIR/{train,val,test}/<class>/*.mp4: short clips whose class depends "
        "on temporal order (moving left/right/up/down, growing/shrinking, rotating, static).",
    )
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--n-per-class", type=_positive, default=60, help="training clips per class")
    m.add_argument("--n-val-per-class", type=_positive, help="default: n-per-class / 4")
    m.add_argument("--n-test-per-class", type=_positive, help="default: n-per-class / 4")
    m.add_argument("--frames", type=_positive, default=24)
    m.add_argument("--fps", type=_positive, default=12)
    m.add_argument("--size", type=_positive, default=128)
    m.set_defaults(func=_cmd_motion)


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


def _add_run_options(p, epochs: int | None = None, **train_defaults) -> None:
    """Options every train / evaluate command takes; training ones when ``epochs`` is given."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=_non_negative, default=2, help="decoding processes")
    p.add_argument("--cache-dir", help="feature cache root (default: ~/.cache/captioner)")
    if epochs is None:
        return
    d = train_defaults
    p.add_argument("--epochs", type=_positive, default=epochs)
    p.add_argument("--batch-size", type=_positive, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning-rate schedule (cosine: decays to 0 over --epochs)",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--grad-clip", type=float, default=5.0, help="max gradient norm")
    p.add_argument(
        "--patience", type=_non_negative, default=d["patience"], help="0: no early stopping"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--name", default=d["name"], help="model name stored in the manifest")
    p.add_argument(
        "--tensorboard", metavar="DIR", help="also log the epoch scalars for TensorBoard here"
    )


def _training_run(args: argparse.Namespace, monitor: str) -> dict:
    """The keyword arguments every train_* function takes, from the shared options."""
    from captioner.reports import require_tensorboard
    from captioner.training.loop import TrainConfig

    if args.tensorboard:
        require_tensorboard()  # fail now, not after the feature cache is built
    return {
        "encoder_name": args.encoder,
        "train_cfg": TrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            grad_clip=args.grad_clip,
            patience=args.patience,
            schedule=args.schedule,
            monitor=monitor,
            seed=args.seed,
            tensorboard=args.tensorboard,
        ),
        "device": args.device,
        "resume": args.resume,
        "cache_root": Path(args.cache_dir) if args.cache_dir else None,
        "workers": args.workers,
        "name": args.name,
        "command": shlex.join(["captioner", *sys.argv[1:]]),
    }


def _report_bundle(out: Path) -> int:
    from captioner.training import distributed

    if not distributed.current().main:  # under torchrun, rank 0 reports
        distributed.cleanup()
        return 0
    distributed.cleanup()
    manifest = json.loads((out / "manifest.json").read_text())
    print(json.dumps({"bundle": str(out), "val": manifest["metrics"]["val"]}, indent=2))
    return 0


def _add_train(sub) -> None:
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
    c.add_argument("--embed-dim", type=_positive, default=256)
    c.add_argument("--hidden-dim", type=_positive, default=512)
    c.add_argument("--attention-dim", type=_positive, default=256)
    c.add_argument("--proj-dim", type=_positive, default=512)
    c.add_argument("--dropout", type=float, default=0.5)
    c.add_argument("--alpha-c", type=float, default=1.0, help="doubly stochastic attention weight")
    c.add_argument("--no-attention", action="store_true", help="NIC variant (Show and Tell)")
    c.add_argument(
        "--no-positions",
        action="store_true",
        help="no grid-cell position embeddings (the original Show, Attend and Tell)",
    )
    c.add_argument("--min-count", type=_positive, default=5, help="vocabulary threshold")
    c.add_argument("--max-len", type=_positive, default=20)
    c.add_argument("--beam-size", type=_positive, default=3, help="beam for validation")
    c.add_argument(
        "--scheduled-sampling", type=float, default=0.0, help="max prob. of feeding own guesses"
    )
    c.add_argument(
        "--fine-tune-blocks",
        type=_non_negative,
        default=0,
        help="also train the encoder's last N blocks (slower: no feature cache)",
    )
    _add_run_options(c, epochs=20, batch_size=64, lr=4e-4, patience=5, name="captioner")
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
    a.add_argument("--encoder", default="efficientnet_lite0")
    a.add_argument("--frames", type=_positive, default=16, help="frames sampled per clip")
    a.add_argument(
        "--train-samples", type=_positive, default=2, help="cached clips per training video (TSN)"
    )
    a.add_argument("--head", choices=("rnn", "mean"), default="rnn", help="mean: the baseline")
    a.add_argument(
        "--image-size", type=_positive, help="encoder input size for frames (default: 224)"
    )
    a.add_argument(
        "--reverse-pairs",
        help="time-reversal augmentation: 'a/b,...' where a clip of a played backwards is a "
        "clip of b ('s/s' for a class that looks the same both ways; 'motion+static' for the "
        "synthetic motion classes)",
    )
    a.add_argument("--rnn", choices=("lstm", "gru"), default="lstm")
    a.add_argument("--layers", type=_positive, default=1)
    a.add_argument("--hidden-dim", type=_positive, default=256)
    a.add_argument("--embed-dim", type=_positive, default=256)
    a.add_argument("--grid", type=_positive, default=3, help="cells per side kept per frame")
    a.add_argument("--cell-dim", type=_positive, default=32)
    a.add_argument("--bidirectional", action="store_true")
    a.add_argument("--dropout", type=float, default=0.3)
    _add_run_options(a, epochs=30, batch_size=16, lr=1e-3, patience=8, name="activity")
    a.set_defaults(func=_cmd_train_activity)


def _cmd_train_caption(args: argparse.Namespace) -> int:
    from captioner.training.caption import CaptionModelOptions, train_caption

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
        **_training_run(args, "CIDEr-D"),
    )
    return _report_bundle(out)


def _cmd_train_activity(args: argparse.Namespace) -> int:
    from captioner.training.activity import ActivityOptions, parse_pairs, train_activity

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
        **_training_run(args, "top1"),
    )
    return _report_bundle(out)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a bundle on annotated data")
    esub = p.add_subparsers(dest="task", required=True)
    c = esub.add_parser(
        "caption",
        help="BLEU-1..4, CIDEr-D and ROUGE-L of a caption bundle",
        description="Caption every image of an annotation file and print coco-caption "
        "metrics as JSON (BLEU on 0-1, CIDEr-D as coco-caption prints it).",
    )
    c.add_argument("--bundle", help="caption bundle (default: weights/caption-default)")
    c.add_argument("--data", required=True, help="annotations (COCO, Karpathy, CSV, JSONL)")
    c.add_argument("--images", required=True, help="folder the annotation file names are under")
    c.add_argument("--split", help="Karpathy split to evaluate (e.g. test)")
    c.add_argument("--beam-size", type=_positive, default=None)
    c.add_argument("--limit", type=_positive, help="evaluate only the first N images")
    c.add_argument(
        "--record",
        metavar="NAME",
        help="also store the scores in the bundle manifest under metrics.NAME",
    )
    c.add_argument(
        "--report",
        metavar="DIR",
        help="also write an HTML report (samples, attention, best and worst) to DIR",
    )
    c.add_argument(
        "--report-samples",
        type=_positive,
        default=12,
        metavar="N",
        help="images with attention strips in --report",
    )
    _add_run_options(c)
    c.set_defaults(func=_cmd_evaluate_caption)

    a = esub.add_parser(
        "activity",
        help="top-1/top-5, per-class accuracy and confusion matrix of an activity bundle",
    )
    a.add_argument("--bundle", help="activity bundle (default: weights/activity-default)")
    a.add_argument("--data", required=True, help="labelled videos (folder per class, or CSV)")
    a.add_argument("--list", dest="split_list", help="UCF101 testlistNN.txt")
    a.add_argument("--plot", metavar="FILE.png", help="also draw the confusion matrix")
    a.add_argument(
        "--pairs",
        help="also report accuracy within class pairs 'a/b,c/d' ('motion': the synthetic pairs)",
    )
    a.add_argument("--record", metavar="NAME", help="store the scores in the bundle manifest")
    a.add_argument("--record-to", metavar="BUNDLE", help="store them in this bundle instead")
    a.add_argument(
        "--report", metavar="DIR", help="also write an HTML report and confusion.png to DIR"
    )
    _add_run_options(a)
    a.set_defaults(func=_cmd_evaluate_activity)


def _cmd_evaluate_caption(args: argparse.Namespace) -> int:
    from captioner.bundle import record_metrics
    from captioner.inference import default_bundle_dir
    from captioner.reports import write_caption_report
    from captioner.training.caption import run_caption_evaluation

    bundle = args.bundle or default_bundle_dir("caption")
    evaluation = run_caption_evaluation(
        bundle,
        args.data,
        args.images,
        split=args.split,
        beam_size=args.beam_size,
        device=args.device,
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        workers=args.workers,
        limit=args.limit,
    )
    result = evaluation.result
    if args.record:
        keep = {k: v for k, v in result.items() if k != "examples"}
        record_metrics(bundle, args.record, {**keep, "data": str(args.data)})
    if args.report:
        context = {"bundle": str(bundle), "data": str(args.data), "split": args.split}
        write_caption_report(args.report, evaluation, args.report_samples, context=context)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_evaluate_activity(args: argparse.Namespace) -> int:
    from captioner.bundle import record_metrics
    from captioner.inference import default_bundle_dir
    from captioner.reports import write_activity_report
    from captioner.training.activity import parse_pairs, plot_confusion, run_activity_evaluation

    bundle = args.bundle or default_bundle_dir("activity")
    evaluation = run_activity_evaluation(
        bundle,
        args.data,
        args.split_list,
        device=args.device,
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        workers=args.workers,
        pairs=parse_pairs(args.pairs) if args.pairs else None,
    )
    report = evaluation.report
    if args.plot:
        report["plot"] = str(plot_confusion(report, args.plot))
    if args.record:
        target = args.record_to or bundle
        record_metrics(
            target, args.record, {**report, "data": str(args.data), "bundle": str(bundle)}
        )
    if args.report:
        context = {"bundle": str(bundle), "data": str(args.data)}
        write_activity_report(args.report, evaluation, context=context)
    print(json.dumps(report, indent=2))
    return 0


def _add_activity(sub) -> None:
    p = sub.add_parser(
        "activity",
        help="label the activity in videos",
        description="Label videos with an activity bundle (default: weights/activity-default). "
        "Writes one JSON record per input: {path, label, score, top_k} or {path, error}.",
    )
    p.add_argument("paths", nargs="+", help="video files, folders (recursive) or globs")
    p.add_argument("--bundle", help="activity bundle folder")
    p.add_argument("--top-k", type=_positive, default=5)
    p.add_argument("--timeline", action="store_true", help="also label sliding windows")
    p.add_argument("--window", type=float, default=2.0, help="timeline window, seconds")
    p.add_argument("--stride", type=float, default=1.0, help="timeline stride, seconds")
    p.add_argument("--batch-size", type=_positive, default=4, help="videos per model batch")
    p.add_argument("--workers", type=_non_negative, default=2, help="decoding processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output .jsonl or .csv (default: JSON lines on stdout)")
    p.add_argument("--resume", action="store_true", help="skip inputs already in --out")
    p.add_argument("--shard", type=_shard, metavar="I/N", help=SHARD_HELP)
    p.set_defaults(func=_cmd_activity)


def _cmd_activity(args: argparse.Namespace) -> int:
    from functools import partial

    from captioner.batch import label_videos
    from captioner.shard import run_sharded

    job = partial(
        label_videos,
        args.paths,
        bundle=args.bundle,
        top_k=args.top_k,
        timeline=args.timeline,
        window=args.window,
        stride=args.stride,
        batch_size=args.batch_size,
        workers=args.workers,
        resume=args.resume,
    )
    return run_sharded(job, args.out, args.shard, args.device)


def _add_merge(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="join the part files of a sharded caption / activity run",
        description="Join NAME.part-I-of-N.jsonl (or .csv) files in shard order into one file, "
        "written atomically. Refuses a missing part, parts of different N, CSV mixed with JSONL "
        "and a path recorded in two parts; a torn last row is cut off with a warning.",
    )
    p.add_argument("parts", nargs="+", help="part files, or a glob like 'captions.part-*.jsonl'")
    p.add_argument("--out", required=True, help="merged .jsonl or .csv file")
    p.set_defaults(func=_cmd_merge)


def _cmd_merge(args: argparse.Namespace) -> int:
    from captioner.shard import merge_parts

    merge_parts(args.parts, args.out)
    return 0


def _add_serve(sub) -> None:
    # Every argument goes to the service's own command, --help included: no options here.
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (see `captioner serve --help`)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    """Hand over to ``python -m service`` in this same process (same PID, so signals and the
    graceful SIGTERM still reach the server); the library never imports the service."""
    import importlib.util
    import os

    if importlib.util.find_spec("service") is None:
        raise ValueError(
            "the HTTP service is not installed next to captioner (no 'service' package); "
            "install the project with: pip install -e ."
        )
    os.execv(sys.executable, [sys.executable, "-m", "service", *args.args])
    return 1  # not reached: execv replaces this process


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a caption bundle to TorchScript or ONNX",
        description="Write DIR/encoder, DIR/decoder_init and DIR/decoder_step (.pt or .onnx, "
        "dynamic batch) and DIR/export.json (names, shapes, vocabulary, preprocessing). "
        "ONNX needs the 'export' extra: pip install 'captioner[export]'.",
    )
    p.add_argument("bundle", help="caption bundle folder")
    p.add_argument("--format", dest="fmt", choices=("torchscript", "onnx"), required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--opset", type=_positive, default=18, help="ONNX opset (default 18)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from captioner.export import export_bundle

    meta = export_bundle(args.bundle, args.out, args.fmt, opset=args.opset)
    graphs = json.loads(meta.read_text())["graphs"]
    print(json.dumps({"export": str(meta), "files": [g["file"] for g in graphs.values()]}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner",
        description="CNN + LSTM image captioning and video activity recognition: caption "
        "images, label videos, generate data, train, evaluate.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_caption(sub)
    _add_activity(sub)
    _add_merge(sub)
    _add_data(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_serve(sub)
    _add_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``captioner`` console script."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    from captioner.bundle import BundleError
    from captioner.encoders import EncoderError
    from captioner.media import MediaError

    try:
        return int(args.func(args) or 0)
    except (BundleError, EncoderError, MediaError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
