"""``captioner evaluate``: score a bundle, optionally record the scores and write a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captioner.cli.options import add_run_options, bundle_help, positive


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a bundle on annotated data")
    esub = p.add_subparsers(dest="task", required=True)
    c = esub.add_parser(
        "caption",
        help="BLEU-1..4, CIDEr-D and ROUGE-L of a caption bundle",
        description="Caption every image of an annotation file and print coco-caption "
        "metrics as JSON (BLEU on 0-1, CIDEr-D as coco-caption prints it).",
    )
    c.add_argument("--bundle", help=bundle_help("caption"))
    c.add_argument("--data", help="annotations (COCO, Karpathy, CSV, JSONL)")
    c.add_argument("--images", help="folder the annotation file names are under")
    c.add_argument(
        "--photos", metavar="DIR", help="instead: real photos from captioner data photos --out DIR"
    )
    c.add_argument(
        "--split", help="Karpathy split to evaluate, e.g. test (default: every image in --data)"
    )
    c.add_argument(
        "--beam-size",
        type=positive,
        help="beam width (default: the bundle's, 3 for the shipped model)",
    )
    c.add_argument("--limit", type=positive, help="evaluate only the first N images (default: all)")
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
        type=positive,
        default=12,
        metavar="N",
        help="images with attention strips in --report",
    )
    add_run_options(c)
    c.set_defaults(func=_cmd_evaluate_caption)

    a = esub.add_parser(
        "activity",
        help="top-1/top-5, per-class accuracy and confusion matrix of an activity bundle",
    )
    a.add_argument("--bundle", help=bundle_help("activity"))
    a.add_argument("--data", required=True, help="labelled videos (folder per class, or CSV)")
    a.add_argument(
        "--list",
        dest="split_list",
        help="UCF101 testlistNN.txt (default: every video in --data)",
    )
    a.add_argument("--plot", metavar="FILE.png", help="also draw the confusion matrix")
    a.add_argument(
        "--pairs",
        help="also report accuracy within class pairs 'a/b,c/d' ('motion': the synthetic pairs)",
    )
    a.add_argument(
        "--record",
        metavar="NAME",
        help="store the scores in the bundle manifest under metrics.NAME",
    )
    a.add_argument(
        "--record-to", metavar="BUNDLE", help="with --record: store them in this bundle instead"
    )
    a.add_argument(
        "--report", metavar="DIR", help="also write an HTML report and confusion.png to DIR"
    )
    add_run_options(a)
    a.set_defaults(func=_cmd_evaluate_activity)


def _cmd_evaluate_caption(args: argparse.Namespace) -> int:
    from captioner.bundle import record_metrics
    from captioner.evaluation import run_caption_evaluation, write_caption_report
    from captioner.inference import bundle_path

    bundle = bundle_path(args.bundle, "caption")
    if args.photos or not (args.data and args.images):
        return _evaluate_photos(args, bundle)
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


def _evaluate_photos(args: argparse.Namespace, bundle) -> int:
    from captioner.bundle import record_metrics
    from captioner.evaluation.photos import run_photo_evaluation

    if not args.photos or args.data or args.images:
        raise ValueError("give --data and --images, or --photos DIR (from captioner data photos)")
    result = run_photo_evaluation(
        bundle, args.photos, args.beam_size, args.device, limit=args.limit
    )
    if args.record:
        keep = {k: v for k, v in result.items() if k != "rows"}
        record_metrics(bundle, args.record, {**keep, "data": str(args.photos)})
    print(json.dumps(result, indent=2))
    return 0


def _cmd_evaluate_activity(args: argparse.Namespace) -> int:
    from captioner.bundle import record_metrics
    from captioner.evaluation import plot_confusion, run_activity_evaluation, write_activity_report
    from captioner.inference import bundle_path
    from captioner.training.activity import parse_pairs

    bundle = bundle_path(args.bundle, "activity")
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
