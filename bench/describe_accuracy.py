"""How often the clip description says the right thing, on rendered camera clips of unseen seeds.

Renders a test split with ``captioner data camera`` (a seed no model was trained on), runs the
shipped activity pipeline's description on every clip (``ActivityClassifier.classify``: the
motion features, the readings, the head on the moving region, shot cuts) twice: with the
learned motion model (``weights/motion-default``, or ``--motion BUNDLE``) and with the geometry
rule (``motion=None``), the baseline; both are scored side by side:

- camera motion top-1 against the rendered camera class, per class and overall (clips without
  a cut; a clip with a cut is scored on its first shot), beside the majority-class rate;
- ``static`` kept under handheld jitter: neither "static" nor "handheld" said as a move;
- object motion top-1 against the background (``object``) on clips with a moving cut-out, per
  class; and on clips with nothing moving, how often "none" is read (``object_none_kept``)
  and how often a motion is said anyway, plainly or hedged (``object_false_said``); on clips
  with a moving cut-out, how often the right motion is said (``object_said_right``) and a
  wrong one (``object_said_wrong``);
- what moves named: the sentence names the moving stamp's category (any of its words);
- cuts: clips with a rendered cut whose description reports a cut within 0.3 s, and clips
  without one that report none.

The readings are said in the sentence only when their score is high enough; the figures here
score the readings themselves, and also how often the sentence says "Unsure.". Seed 123 was
used for nothing; seed 99 chose the geometry rule's JITTER line (the learned model saw neither;
it trains on seed 0).

    python bench/describe_accuracy.py [--clips 180] [--seed 123 99] [--motion BUNDLE]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import subprocess
import sys
import time

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
from _common import ROOT, WORK, report

import captioner
from captioner.inference import ActivityClassifier, motion_reader
from captioner.inference.sentences import SentenceConfig


def generate(out, seed: int, clips: int, packages: str | None) -> None:
    cmd = [sys.executable, "-m", "captioner", "data", "camera", "--out", str(out), "--seed"]
    cmd += [str(seed), "--n-train", "0", "--n-val", "0", "--n-test", str(clips), "-q"]
    if packages:
        cmd += ["--packages", packages]
    subprocess.run(cmd, check=True, cwd=ROOT)


def _rate(hits: collections.Counter, totals: collections.Counter) -> dict[str, float]:
    return {k: round(hits[k] / totals[k], 3) for k in sorted(totals)}


def score(clips: list[dict], results: list, fps: float) -> dict:
    """The figures of one run of the description over the rendered clips."""
    cam, cam_total = collections.Counter(), collections.Counter()
    obj, obj_total = collections.Counter(), collections.Counter()
    named = [0, 0]
    none_kept = [0, 0]
    false_said = 0  # a motion said (plainly or hedged) where nothing moves
    said_right = said_wrong = 0  # on clips with a moving cut-out
    probable = SentenceConfig().probable
    cuts = {"found": 0, "with_cut": 0, "clean": 0, "without_cut": 0}
    unsure = 0
    kept_static = [0, 0]
    sources = set()
    for clip, res in zip(clips, results, strict=True):
        d = res.description
        sources.add(d.get("source"))
        shots = d["shots"]
        first = shots[0] if shots else {}
        said = (first.get("camera") or {}).get("label")
        cam_total[clip["camera"]] += 1
        cam[clip["camera"]] += int(said == clip["camera"])
        if clip["camera"] in ("static", "handheld"):
            kept_static[1] += 1
            kept_static[0] += int(said in ("static", "handheld"))
        unsure += int(d["sentence"] == "Unsure.")
        moving = (first.get("motion") or {}).get("label")
        if clip["moves"] and clip["object"] != "none":
            obj_total[clip["object"]] += 1
            obj[clip["object"]] += int(moving == clip["object"])
            if (first.get("motion") or {}).get("score", 0.0) >= probable:
                said_right += int(moving == clip["object"])
                said_wrong += int(moving not in (None, "none", clip["object"]))
            named[1] += 1
            words = clip["moves"].lower().split()
            named[0] += int(any(w in d["sentence"].lower().split() for w in words))
        elif clip["object"] == "none":
            none_kept[1] += 1
            none_kept[0] += int(moving in (None, "none"))
            score = (first.get("motion") or {}).get("score") or 0.0
            false_said += int(moving not in (None, "none") and score >= probable)
        reported = d.get("cuts") or []
        if clip["cut"] is not None:
            cuts["with_cut"] += 1
            t = clip["cut"] / fps
            cuts["found"] += int(any(abs(c - t) <= 0.3 for c in reported))
        else:
            cuts["without_cut"] += 1
            cuts["clean"] += int(not reported)
    total = sum(cam_total.values())
    objects = sum(obj_total.values())
    return {
        "source": ",".join(sorted(str(s) for s in sources)),
        "camera_top1": round(sum(cam.values()) / max(total, 1), 3),
        "camera_per_class": _rate(cam, cam_total),
        "static_or_handheld_kept": round(kept_static[0] / max(kept_static[1], 1), 3),
        "object_motion_top1": round(sum(obj.values()) / max(objects, 1), 3),
        "object_per_class": _rate(obj, obj_total),
        "object_clips": objects,
        "object_none_kept": f"{none_kept[0]}/{none_kept[1]}",
        "object_false_said": f"{false_said}/{none_kept[1]}",
        "object_said_right": f"{said_right}/{named[1]}",
        "object_said_wrong": f"{said_wrong}/{named[1]}",
        "what_moves_named": round(named[0] / max(named[1], 1), 3),
        "cuts_found": f"{cuts['found']}/{cuts['with_cut']}",
        "no_false_cut": f"{cuts['clean']}/{cuts['without_cut']}",
        "sentence_unsure": round(unsure / max(total, 1), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=180)
    ap.add_argument("--seed", type=int, nargs="+", default=[123, 99])
    ap.add_argument("--packages", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--motion", default="default", help="motion bundle (default: the shipped)")
    args = ap.parse_args()
    learned = ActivityClassifier.from_bundle(
        captioner.default_bundle_dir("activity"), args.device, motion=args.motion
    )
    if learned.motion is None:
        sys.exit(f"no motion bundle for --motion {args.motion}: nothing learned to compare")
    geometry = copy.copy(learned)  # the same encoder and head, the geometry rule's readings
    geometry.motion = motion_reader(None)
    for seed in args.seed:
        out = WORK / f"camera-{seed}-{args.clips}"
        if not (out / "test.json").is_file():
            generate(out, seed, args.clips, args.packages)
        split = json.loads((out / "test.json").read_text())
        clips, fps = split["clips"], float(split["info"]["fps"])
        paths = [out / c["path"] for c in clips]
        figures, seconds = {}, {}
        for name, clf in (("learned", learned), ("geometry", geometry)):
            t0 = time.perf_counter()
            figures[name] = score(clips, clf.classify(paths), fps)
            seconds[name] = round(time.perf_counter() - t0, 1)
        totals = collections.Counter(c["camera"] for c in clips)
        report(
            "describe_accuracy",
            {
                "clips": len(clips),
                "seed": seed,
                "motion_model": learned.motion.name,
                "camera_majority_baseline": round(max(totals.values()) / max(len(clips), 1), 3),
                **figures,
                "seconds": seconds,
            },
        )


if __name__ == "__main__":
    main()
