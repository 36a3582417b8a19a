"""Caption and classification metrics, in pure Python.

Caption metrics reproduce the coco-caption scorers (the ``pycocoevalcap``
package) exactly, without Java: corpus BLEU-1..4, CIDEr-D and ROUGE-L. The
Stanford PTB tokenizer of the official pipeline is replaced by
:func:`ptb_tokenize` (in :mod:`captioner.vocab`, re-exported here), which
matches it on ordinary captions and documents where it differs; on
already-tokenised text the scores match ``pycocoevalcap`` to floating-point
precision.

Classification metrics (for the video activity task): top-k accuracy, the
confusion matrix and per-class accuracy.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from captioner.vocab import PUNCTUATION_TOKENS, ptb_tokenize

__all__ = [
    "PUNCTUATION_TOKENS",
    "bleu",
    "cider_d",
    "confusion_matrix",
    "per_class_accuracy",
    "ptb_tokenize",
    "rouge_l",
    "score",
    "topk_accuracy",
]

logger = logging.getLogger(__name__)

References = Mapping[Hashable, Sequence[str]]
Hypotheses = Mapping[Hashable, str]
NGram = tuple[str, ...]

_SIGMA = 6.0  # CIDEr-D Gaussian length penalty
_BETA = 1.2  # ROUGE-L recall weight
_TINY = 1e-15  # BLEU numerator constant: zero matches give ~0, not an error
_SMALL = 1e-9  # BLEU denominator constant: avoids division by zero


# --------------------------------------------------------------------------- validation


def _describe(ids: set[Hashable], limit: int = 10) -> str:
    shown = sorted(ids, key=repr)[:limit]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(repr(i) for i in shown) + more


def _check(references: References, hypotheses: Hypotheses) -> None:
    """Raise a clear error unless both dicts describe the same non-empty set of images."""
    if not isinstance(references, Mapping) or not isinstance(hypotheses, Mapping):
        raise TypeError(
            "references and hypotheses must be dicts keyed by image id: "
            "{id: [reference, ...]} and {id: hypothesis}"
        )
    if not references and not hypotheses:
        raise ValueError("nothing to score: references and hypotheses are empty")
    ref_ids, hyp_ids = set(references), set(hypotheses)
    if ref_ids != hyp_ids:
        parts = []
        if ref_ids - hyp_ids:
            parts.append(f"ids without a hypothesis: {_describe(ref_ids - hyp_ids)}")
        if hyp_ids - ref_ids:
            parts.append(f"ids without references: {_describe(hyp_ids - ref_ids)}")
        raise ValueError(
            "references and hypotheses must have the same image ids; "
            + "; ".join(parts)
            + ". Give exactly one hypothesis for every image that has references."
        )
    for image_id, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(
                f"references[{image_id!r}] must be a list of strings, got "
                f"{type(refs).__name__}; wrap a single caption as [caption]"
            )
        if not refs:
            raise ValueError(f"references[{image_id!r}] is empty; every image needs a reference")
        if not all(isinstance(r, str) for r in refs):
            raise TypeError(f"references[{image_id!r}] must contain only strings")
        if not isinstance(hypotheses[image_id], str):
            raise TypeError(
                f"hypotheses[{image_id!r}] must be one string, got "
                f"{type(hypotheses[image_id]).__name__}"
            )


def _ngrams(words: Sequence[str], n: int) -> Counter[NGram]:
    """Counts of every 1..n-gram in ``words``."""
    counts: Counter[NGram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


# --------------------------------------------------------------------------- BLEU


def _bleu_from_counts(
    correct: Sequence[float], guess: Sequence[float], testlen: float, reflen: float
) -> list[float]:
    """BLEU-1..n from match and guess counts, with coco-caption's constants."""
    scores = []
    product = 1.0
    for k in range(len(correct)):
        product *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def bleu(
    references: References, hypotheses: Hypotheses, n: int = 4
) -> tuple[list[float], dict[Hashable, list[float]]]:
    """Corpus BLEU-1..n as coco-caption computes it, plus per-image BLEU.

    Inputs are already-tokenised strings (words separated by whitespace).
    Clipped n-gram matches, n-gram counts and lengths are summed over all
    images before the geometric mean; each image's reference length is the one
    closest to its hypothesis (ties go to the shorter). Returns ``(corpus,
    per_image)``: ``corpus[k]`` is BLEU-(k+1), and ``per_image[id]`` the same
    list for one image. The per-image scores do not average to the corpus score.
    """
    _check(references, hypotheses)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    total_correct = [0] * n
    total_guess = [0] * n
    total_test = 0
    total_ref = 0
    per_image: dict[Hashable, list[float]] = {}
    for image_id, refs in references.items():
        max_ref_counts: dict[NGram, int] = {}
        ref_lens = []
        for ref in refs:
            words = ref.split()
            ref_lens.append(len(words))
            for gram, count in _ngrams(words, n).items():
                if count > max_ref_counts.get(gram, 0):
                    max_ref_counts[gram] = count
        words = hypotheses[image_id].split()
        testlen = len(words)
        reflen = min(ref_lens, key=lambda length: (abs(length - testlen), length))
        guess = [max(0, testlen - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, count in _ngrams(words, n).items():
            correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
        per_image[image_id] = _bleu_from_counts(correct, guess, testlen, reflen)
        for k in range(n):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
        total_test += testlen
        total_ref += reflen
    corpus = _bleu_from_counts(total_correct, total_guess, total_test, total_ref)
    return corpus, per_image


# --------------------------------------------------------------------------- CIDEr-D


def _tfidf(
    counts: Counter[NGram], doc_freq: Mapping[NGram, int], log_n_images: float, n: int
) -> tuple[list[dict[NGram, float]], list[float], int]:
    """tf-idf vectors per n-gram order, their norms, and coco-caption's "length"."""
    vec: list[dict[NGram, float]] = [{} for _ in range(n)]
    sq_norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        order = len(gram) - 1
        weight = float(tf) * (log_n_images - math.log(max(1.0, doc_freq.get(gram, 0))))
        vec[order][gram] = weight
        sq_norm[order] += weight * weight
        # coco-caption measures length in bigrams, not words; kept identical to it.
        if order == 1:
            length += tf
    return vec, [math.sqrt(s) for s in sq_norm], length


def cider_d(
    references: References, hypotheses: Hypotheses, n: int = 4, sigma: float = _SIGMA
) -> tuple[float, dict[Hashable, float]]:
    """CIDEr-D as coco-caption reports it ("CIDEr", x10 scale), plus per-image scores.

    Inputs are already-tokenised strings. Document frequencies come from the
    references of the images being scored, so the score depends on the whole
    set: a single image alone always scores 0. Returns ``(corpus, per_image)``
    where the corpus score is the mean of the per-image scores.
    """
    _check(references, hypotheses)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    ids = list(references)
    ref_counts = {i: [_ngrams(r.split(), n) for r in references[i]] for i in ids}
    doc_freq: Counter[NGram] = Counter()
    for counts_list in ref_counts.values():
        doc_freq.update(set().union(*counts_list))
    log_n_images = math.log(float(len(ids)))

    per_image: dict[Hashable, float] = {}
    for image_id in ids:
        hyp_vec, hyp_norm, hyp_len = _tfidf(
            _ngrams(hypotheses[image_id].split(), n), doc_freq, log_n_images, n
        )
        total = [0.0] * n
        for counts in ref_counts[image_id]:
            ref_vec, ref_norm, ref_len = _tfidf(counts, doc_freq, log_n_images, n)
            penalty = math.exp(-(float(hyp_len - ref_len) ** 2) / (2 * sigma**2))
            for k in range(n):
                sim = 0.0
                for gram, weight in hyp_vec[k].items():
                    ref_weight = ref_vec[k].get(gram, 0.0)
                    sim += min(weight, ref_weight) * ref_weight
                if hyp_norm[k] != 0 and ref_norm[k] != 0:
                    sim /= hyp_norm[k] * ref_norm[k]
                total[k] += sim * penalty
        per_image[image_id] = sum(total) / n / len(ref_counts[image_id]) * 10.0
    corpus = sum(per_image.values()) / len(per_image)
    return corpus, per_image


# --------------------------------------------------------------------------- ROUGE-L


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, in O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(
    references: References, hypotheses: Hypotheses, beta: float = _BETA
) -> tuple[float, dict[Hashable, float]]:
    """ROUGE-L as coco-caption computes it, plus per-image scores.

    Inputs are already-tokenised strings, split on single spaces as
    coco-caption does. Per image, LCS precision and recall are each maxed over
    the references, then combined into an F-measure weighted by ``beta``.
    Returns ``(corpus, per_image)``; the corpus score is the per-image mean.
    """
    _check(references, hypotheses)
    per_image: dict[Hashable, float] = {}
    for image_id, refs in references.items():
        hyp = hypotheses[image_id].split(" ")
        best_prec = 0.0
        best_rec = 0.0
        for ref in refs:
            ref_words = ref.split(" ")
            lcs = _lcs_length(ref_words, hyp)
            best_prec = max(best_prec, lcs / len(hyp))
            best_rec = max(best_rec, lcs / len(ref_words))
        if best_prec != 0 and best_rec != 0:
            b2 = beta**2
            per_image[image_id] = (1 + b2) * best_prec * best_rec / (best_rec + b2 * best_prec)
        else:
            per_image[image_id] = 0.0
    corpus = sum(per_image.values()) / len(per_image)
    return corpus, per_image


# --------------------------------------------------------------------------- all together


def score(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    tokenize: bool = True,
) -> dict[str, float]:
    """Score captions with coco-caption's BLEU-1..4, CIDEr-D and ROUGE-L.

    ``references`` maps each image id to its reference captions and
    ``hypotheses`` maps the same ids to one generated caption each. With
    ``tokenize=True`` every string goes through :func:`ptb_tokenize` first (as
    coco-caption's pipeline does); with ``tokenize=False`` the strings are
    used as given. Returns ``{"BLEU-1": ..., "BLEU-4": ..., "CIDEr-D": ...,
    "ROUGE-L": ...}``: BLEU and ROUGE-L on 0-1, CIDEr-D on coco-caption's
    x10 scale (typically 0.5-1.3 for real models).
    """
    _check(references, hypotheses)
    if tokenize:
        references = {i: [ptb_tokenize(r) for r in refs] for i, refs in references.items()}
        hypotheses = {i: ptb_tokenize(h) for i, h in hypotheses.items()}
    bleus, _ = bleu(references, hypotheses, n=4)
    result = {f"BLEU-{k + 1}": value for k, value in enumerate(bleus)}
    result["CIDEr-D"] = cider_d(references, hypotheses)[0]
    result["ROUGE-L"] = rouge_l(references, hypotheses)[0]
    logger.debug("scored %d images: %s", len(references), result)
    return result


# --------------------------------------------------------------------------- classification


def topk_accuracy(
    logits_or_scores: Sequence[Sequence[float]], labels: Sequence[int], k: int
) -> float:
    """Fraction of samples whose true label is among the ``k`` highest scores.

    ``logits_or_scores`` is one row of class scores per sample (lists, numpy
    arrays or tensors). Ties are broken towards the lower class index, so a
    constant row ranks class 0 first.
    """
    if len(logits_or_scores) != len(labels):
        raise ValueError(
            f"got {len(logits_or_scores)} score rows but {len(labels)} labels; "
            "give one label per row"
        )
    if len(labels) == 0:
        raise ValueError("top-k accuracy of no samples is undefined; pass at least one sample")
    num_classes = len(logits_or_scores[0])
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must be between 1 and the number of classes ({num_classes}), got {k}")
    hits = 0
    for row_index, (row, label) in enumerate(zip(logits_or_scores, labels, strict=True)):
        values = [float(v) for v in row]
        label = int(label)
        if len(values) != num_classes:
            raise ValueError(
                f"row {row_index} has {len(values)} scores, expected {num_classes} like row 0"
            )
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} at {row_index} is outside 0..{num_classes - 1}")
        if any(math.isnan(v) for v in values):
            raise ValueError(f"row {row_index} contains NaN scores")
        target = values[label]
        # The label's rank: classes scoring higher, or equal with a lower index.
        rank = sum(1 for j, v in enumerate(values) if v > target or (v == target and j < label))
        hits += rank < k
    return hits / len(labels)


def confusion_matrix(
    predictions: Sequence[int], labels: Sequence[int], num_classes: int
) -> list[list[int]]:
    """Count matrix with rows = true class and columns = predicted class."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if len(predictions) != len(labels):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(labels)} labels; they must pair up"
        )
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for index, (pred, true) in enumerate(zip(predictions, labels, strict=True)):
        pred, true = int(pred), int(true)
        if not (0 <= pred < num_classes and 0 <= true < num_classes):
            raise ValueError(
                f"sample {index}: prediction {pred} / label {true} outside 0..{num_classes - 1}; "
                "check num_classes"
            )
        matrix[true][pred] += 1
    return matrix


def per_class_accuracy(confusion: Sequence[Sequence[int]]) -> list[float]:
    """Recall of each class from a confusion matrix (rows = true class).

    A class with no samples (an all-zero row) gets 0.0 rather than NaN, so the
    result is always safe to average or serialise; count such classes
    separately if they should be left out of a mean.
    """
    size = len(confusion)
    accuracies = []
    for index, row in enumerate(confusion):
        if len(row) != size:
            raise ValueError(
                f"confusion matrix must be square: row {index} has {len(row)} entries, "
                f"expected {size}"
            )
        total = sum(row)
        accuracies.append(row[index] / total if total else 0.0)
    return accuracies
