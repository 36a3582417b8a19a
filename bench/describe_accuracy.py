"""How often the clip description says the right thing, on rendered camera clips of an unseen seed.

Renders a test split with ``captioner data camera`` (a seed no model was trained on), runs the
shipped activity pipeline's description on every clip (``ActivityClassifier.classify``: the
motion features, the geometry rule, the head on the moving region, shot cuts) and scores:

- camera motion top-1 against the rendered camera class, per class and overall (clips without
  a cut; a clip with a cut is scored on its first shot), beside the majority-class rate;
- ``static`` kept under handheld jitter: neither "static" nor "handheld" said as a move;
- object motion top-1 against the background (``object``) on clips with a moving cut-out;
- what moves named: the sentence names the moving stamp's category (any of its words);
- cuts: clips with a rendered cut whose description reports a cut within 0.3 s, and clips
  without one that report none.

The readings are said in the sentence only when their score is high enough; the figures here
score the readings themselves, and also how often the sentence says "Unsure.".

    python bench/describe_accuracy.py [--clips 180] [--seed 99] [--packages DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
from _common import ROOT, WORK, report

import captioner


def generate(out, seed: int, clips: int, packages: str | None) -> None:
    cmd = [sys.executable, "-m", "captioner", "data", "camera", "--out", str(out), "--seed"]
    cmd += [str(seed), "--n-train", "0", "--n-val", "0", "--n-test", str(clips), "-q"]
    if packages:
        cmd += ["--packages", packages]
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=180)
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--packages", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    out = WORK / f"camera-{args.seed}-{args.clips}"
    if not (out / "test.json").is_file():
        generate(out, args.seed, args.clips, args.packages)
    split = json.loads((out / "test.json").read_text())
    clips, fps = split["clips"], float(split["info"]["fps"])
    clf = captioner.load(captioner.default_bundle_dir("activity"), args.device)
    results = clf.classify([out / c["path"] for c in clips])
    cam = collections.Counter()
    cam_total = collections.Counter()
    obj = [0, 0]
    named = [0, 0]
    cuts = {"found": 0, "with_cut": 0, "clean": 0, "without_cut": 0}
    unsure = 0
    kept_static = [0, 0]
    for clip, res in zip(clips, results, strict=True):
        d = res.description
        shots = d["shots"]
        first = shots[0] if shots else {}
        said = (first.get("camera") or {}).get("label")
        cam_total[clip["camera"]] += 1
        cam[clip["camera"]] += int(said == clip["camera"])
        if clip["camera"] in ("static", "handheld"):
            kept_static[1] += 1
            kept_static[0] += int(said in ("static", "handheld"))
        unsure += int(d["sentence"] == "Unsure.")
        if clip["moves"] and clip["object"] != "none":
            obj[1] += 1
            obj[0] += int((first.get("motion") or {}).get("label") == clip["object"])
            named[1] += 1
            words = clip["moves"].lower().split()
            named[0] += int(any(w in d["sentence"].lower().split() for w in words))
        reported = d.get("cuts") or []
        if clip["cut"] is not None:
            cuts["with_cut"] += 1
            t = clip["cut"] / fps
            cuts["found"] += int(any(abs(c - t) <= 0.3 for c in reported))
        else:
            cuts["without_cut"] += 1
            cuts["clean"] += int(not reported)
    total = sum(cam_total.values())
    report(
        "describe_accuracy",
        {
            "clips": total,
            "seed": args.seed,
            "camera_top1": round(sum(cam.values()) / max(total, 1), 3),
            "camera_majority_baseline": round(max(cam_total.values()) / max(total, 1), 3),
            "camera_per_class": {k: round(cam[k] / cam_total[k], 3) for k in sorted(cam_total)},
            "static_or_handheld_kept": round(kept_static[0] / max(kept_static[1], 1), 3),
            "object_motion_top1": round(obj[0] / max(obj[1], 1), 3),
            "object_clips": obj[1],
            "what_moves_named": round(named[0] / max(named[1], 1), 3),
            "cuts_found": f"{cuts['found']}/{cuts['with_cut']}",
            "no_false_cut": f"{cuts['clean']}/{cuts['without_cut']}",
            "sentence_unsure": round(unsure / max(total, 1), 3),
        },
    )


if __name__ == "__main__":
    main()
