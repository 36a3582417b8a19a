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
    p.set_defaults(func=_cmd_caption)


def _cmd_caption(args: argparse.Namespace) -> int:
    from captioner.batch import caption_files

    return caption_files(
        args.paths,
        bundle=args.bundle,
        out=args.out,
        beam_size=args.beam_size,
        n_best=args.n_best,
        max_len=args.max_len,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        resume=args.resume,
    )


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


def _cmd_scenes(args: argparse.Namespace) -> int:
    from captioner.data.scenes import generate_scenes

    paths = generate_scenes(
        args.out, args.seed, args.n_train, args.n_val, args.n_test, args.n_novel, args.image_size
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
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
    c.add_argument("--epochs", type=_positive, default=20)
    c.add_argument("--batch-size", type=_positive, default=64)
    c.add_argument("--lr", type=float, default=4e-4)
    c.add_argument("--weight-decay", type=float, default=1e-4)
    c.add_argument("--grad-clip", type=float, default=5.0)
    c.add_argument("--patience", type=_non_negative, default=5, help="0 disables early stopping")
    c.add_argument("--seed", type=int, default=0)
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
    c.add_argument("--device", default="auto")
    c.add_argument("--workers", type=_non_negative, default=2)
    c.add_argument("--cache-dir", help="feature cache root (default: ~/.cache/captioner)")
    c.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    c.add_argument("--name", default="captioner", help="model name stored in the manifest")
    c.set_defaults(func=_cmd_train_caption)


def _cmd_train_caption(args: argparse.Namespace) -> int:
    from captioner.training.caption import CaptionModelOptions, train_caption
    from captioner.training.loop import TrainConfig

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
    cfg = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        patience=args.patience,
        seed=args.seed,
    )
    out = train_caption(
        args.data,
        args.val,
        args.images,
        args.out,
        val_images=args.val_images,
        train_split=args.train_split,
        val_split=args.val_split,
        encoder_name=args.encoder,
        model_opts=opts,
        train_cfg=cfg,
        device=args.device,
        resume=args.resume,
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        workers=args.workers,
        name=args.name,
        command=shlex.join(["captioner", *sys.argv[1:]]),
    )
    manifest = json.loads((out / "manifest.json").read_text())
    print(json.dumps({"bundle": str(out), "val": manifest["metrics"]["val"]}, indent=2))
    return 0


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
    c.add_argument("--device", default="auto")
    c.add_argument("--workers", type=_non_negative, default=2)
    c.add_argument("--cache-dir", help="feature cache root (default: ~/.cache/captioner)")
    c.add_argument(
        "--record",
        metavar="NAME",
        help="also store the scores in the bundle manifest under metrics.NAME",
    )
    c.set_defaults(func=_cmd_evaluate_caption)


def _cmd_evaluate_caption(args: argparse.Namespace) -> int:
    from captioner.bundle import record_metrics
    from captioner.inference import default_bundle_dir
    from captioner.training.caption import evaluate_caption

    bundle = args.bundle or default_bundle_dir("caption")
    result = evaluate_caption(
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
    if args.record:
        keep = {k: v for k, v in result.items() if k != "examples"}
        record_metrics(bundle, args.record, {**keep, "data": str(args.data)})
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner",
        description="CNN + LSTM image captioning: caption images, generate data, train, evaluate.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_caption(sub)
    _add_data(sub)
    _add_train(sub)
    _add_evaluate(sub)
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
