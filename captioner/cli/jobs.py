"""``captioner caption``, ``activity`` and ``merge``: the folder jobs."""

from __future__ import annotations

import argparse

from captioner.cli.options import (
    DEVICE_HELP,
    RESUME_HELP,
    SHARD_HELP,
    bundle_help,
    check_output,
    non_negative,
    positive,
    shard_arg,
)


def add_caption(sub) -> None:
    p = sub.add_parser(
        "caption",
        help="caption image files, folders (recursive) or globs",
        description="Caption images with a caption bundle (default: the shipped model in "
        "weights/). Writes one record per input: {path, caption, log_prob, confidence, tags, "
        "out_of_domain, domain_distance} (plus slots when the caption named objects from the "
        "image, and alternatives with --n-best), or {path, error} for a file that cannot be read.",
    )
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or globs")
    p.add_argument("--bundle", help=bundle_help("caption"))
    p.add_argument(
        "--beam-size",
        type=positive,
        help="beam width (default: the bundle's, 3 for the shipped model)",
    )
    p.add_argument(
        "--n-best", type=positive, default=1, help="captions listed per image, at most the beam"
    )
    p.add_argument(
        "--max-len",
        type=positive,
        help="maximum caption length in words (default: the bundle's, 20 for the shipped model)",
    )
    p.add_argument("--batch-size", type=positive, default=16, help="images per model batch")
    p.add_argument(
        "--workers", type=non_negative, default=2, help="image decoding processes, 0 = in-process"
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", help="output .jsonl or .csv (default: JSON lines on stdout)")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.add_argument("--shard", type=shard_arg, metavar="I/N", help=SHARD_HELP)
    add_engine_options(p)
    p.set_defaults(func=_cmd_caption)


def _cmd_caption(args: argparse.Namespace) -> int:
    from functools import partial

    from captioner.batch import caption_files
    from captioner.bundle import read_spec
    from captioner.decoding import check_n_best
    from captioner.inference import bundle_path
    from captioner.shard import run_sharded

    check_output(args)
    beam = args.beam_size
    if beam is None:  # the bundle's own default: read its manifest, not its weights
        beam = read_spec(bundle_path(args.bundle, "caption")).beam_size
    check_n_best(args.n_best, beam, option="--n-best")
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
        engine=engine_from_args(args),
    )
    return run_sharded(job, args.out, args.shard, args.device)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine and its Ray options (the same for both folder commands)."""
    g = p.add_argument_group("engine (past one machine)")
    g.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process's decoding workers; ray: a Ray Data actor pool on a running "
        "cluster (--address or $RAY_ADDRESS) or a local Ray (needs captioner[ray])",
    )
    g.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    g.add_argument("--concurrency", type=positive, default=1, help="Ray actors, one model each")
    g.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per Ray actor")
    g.add_argument("--num-cpus", type=float, help="CPUs per Ray actor (default: Ray's, 1)")


def engine_from_args(args: argparse.Namespace):
    """The engine --engine names (None: local), its options checked before any work."""
    if args.engine == "local":
        for flag in ("address", "num_cpus"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} is a Ray option: add --engine ray")
        return None
    if args.shard is not None:
        raise ValueError("--shard splits work by hand: with --engine ray, Ray places the work")
    from captioner.engines.ray_data import RayEngine, require_ray

    try:
        require_ray()
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    engine = RayEngine(args.address, args.concurrency, args.num_gpus, args.num_cpus)
    engine.check()  # an address where nothing listens fails before the model loads
    return engine


def add_activity(sub) -> None:
    p = sub.add_parser(
        "activity",
        help="label the activity in videos",
        description="Label videos with an activity bundle (default: weights/activity-default). "
        "Writes one record per input: {path, label, score, top_k} (plus timeline with "
        "--timeline), or {path, error} for a file that cannot be read.",
    )
    p.add_argument("paths", nargs="+", help="video files, folders (recursive) or globs")
    p.add_argument("--bundle", help=bundle_help("activity"))
    p.add_argument("--top-k", type=positive, default=5, help="labels listed per video")
    p.add_argument(
        "--motion",
        default="default",
        help="what reads the description's camera and object motion: a motion bundle folder, "
        "'geometry' for the no-learning rule (default: the shipped weights/motion-default)",
    )
    p.add_argument("--timeline", action="store_true", help="also label sliding windows")
    p.add_argument(
        "--window",
        type=float,
        help="timeline window, seconds (default: the length of the model's training clips, "
        "2 s for the shipped model; shorter windows are labelled less reliably)",
    )
    p.add_argument(
        "--stride", type=float, help="timeline stride, seconds (default: half the window)"
    )
    p.add_argument("--batch-size", type=positive, default=4, help="videos per model batch")
    p.add_argument(
        "--workers", type=non_negative, default=2, help="video decoding processes, 0 = in-process"
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", help="output .jsonl or .csv (default: JSON lines on stdout)")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.add_argument("--shard", type=shard_arg, metavar="I/N", help=SHARD_HELP)
    add_engine_options(p)
    p.set_defaults(func=_cmd_activity)


def _cmd_activity(args: argparse.Namespace) -> int:
    from functools import partial

    from captioner.batch import label_videos
    from captioner.inference import check_timeline
    from captioner.shard import run_sharded

    check_output(args)
    if args.timeline:
        check_timeline(args.window, args.stride)

    job = partial(
        label_videos,
        args.paths,
        bundle=args.bundle,
        top_k=args.top_k,
        motion=args.motion,
        timeline=args.timeline,
        window=args.window,
        stride=args.stride,
        batch_size=args.batch_size,
        workers=args.workers,
        resume=args.resume,
        engine=engine_from_args(args),
    )
    return run_sharded(job, args.out, args.shard, args.device)


def add_merge(sub) -> None:
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
