"""The caption pipeline: image -> uint8 tensor -> feature grid -> beam search -> result.

:class:`CaptionPipeline` is the one place that calls beam search and builds caption results.
:class:`Captioner` runs it with a bundle's PyTorch encoder and decoder; the export runner, the
evaluation and validation during training run the same class over their own encoder or
features, so every surface decodes alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from captioner.bundle import Bundle, BundleError, Decoding, Manifest
from captioner.bundle.domain import DomainStats, domain_stats
from captioner.concepts import batch_tags
from captioner.decoding import Hypothesis, SearchConfig, decode, suppress_ids
from captioner.encoders import Encoder, ImageNetHead, Preprocess
from captioner.inference.common import (
    BundleModel,
    autocast,
    bundle_encoder,
    bundle_module,
    encode_images,
    image_from_array,
    manifest_part,
    open_bundle,
    per_item,
    precision_name,
    prepare_encoder,
    resolve_device,
)
from captioner.inference.grounding import GroundingConfig, decoder_confidence, ground_results
from captioner.inference.results import CaptionResult, ErrorResult, Errors, check_errors
from captioner.inference.slots import fill_slots, slot_tokens
from captioner.media import DEFAULT_LIMITS, ImageLimits, decode_image
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig
from captioner.models.grid import grid_shape
from captioner.vocab import UNK, Vocabulary

ImageSource = str | os.PathLike | bytes | bytearray | Image.Image | np.ndarray

__all__ = ["CaptionPipeline", "CaptionResult", "Captioner", "ImageSource", "is_single_image"]


def is_single_image(images: object) -> bool:
    """Whether ``caption(images)`` got one image (-> one result) rather than a list of them.

    An array is one image unless it is 4-D: ``(N, H, W, C)`` is N images.
    """
    if isinstance(images, np.ndarray):
        return images.ndim != 4
    return isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image))


class CaptionPipeline:
    """Features -> captions with the shared beam search; images -> features via :meth:`encode`.

    ``decoder`` is a :class:`CaptionDecoder` or anything with its ``init_state`` / ``step``
    interface (the export runner drives exported graphs through it).

    ``head`` (the encoder's ImageNet classifier) and ``domain`` (the bundle's calibration) are
    optional: without them results carry no tags / no out-of-domain flag. Both read the pooled
    features, which are the mean of the grid exactly as the encoder computes them, so neither
    needs a second pass through the encoder. ``top_tags`` is how many tags a result gets.

    ``grounding`` (with a head): the thresholds of the decode-time grounding rules
    (:mod:`captioner.inference.grounding`); None keeps the decoder's first caption as it is.
    """

    head: ImageNetHead | None = None
    domain: DomainStats | None = None
    top_tags: int = 5
    grounding: GroundingConfig | None = GroundingConfig()

    def __init__(
        self,
        decoder: Any,
        vocab: Vocabulary,
        default_search: SearchConfig,
        device: torch.device,
        preprocess: Preprocess | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        self.decoder = decoder
        self.vocab = vocab
        self.default_search = default_search
        self.device = device
        self._preprocess = preprocess
        self.limits = limits
        self._slot_ids = frozenset(slot_tokens(vocab.itos))  # a vocabulary trained with <obj>

    @staticmethod
    def search_defaults(decoding: Decoding | Mapping[str, Any], vocab: Vocabulary) -> SearchConfig:
        """A bundle's default search (``Manifest.search``, or a ``decoding`` dict whose missing
        keys take the manifest's defaults) -> the search config (``<unk>`` never generated)."""
        d = decoding if isinstance(decoding, Decoding) else Decoding.from_dict(decoding)
        return SearchConfig(
            beam_size=d.beam_size,
            max_len=d.max_len,
            length_penalty=d.length_penalty,
            suppress=suppress_ids(vocab.itos, [UNK]),
        )

    @property
    def preprocess(self) -> Preprocess:
        if self._preprocess is None:
            raise ValueError("this pipeline decodes features only: it has no image preprocessing")
        return self._preprocess

    @property
    def precision(self) -> str:
        """The precision the model runs in here (``fp32`` on the CPU, fp16 autocast on CUDA)."""
        return precision_name(self.device)

    def precision_context(self) -> contextlib.AbstractContextManager:
        return autocast(self.device)

    # -- preprocess -------------------------------------------------------------------------

    def load_image(self, source: ImageSource) -> torch.Tensor:
        """Decode and validate one image (MediaError on bad input) -> (3, S, S) uint8."""
        size = self.preprocess.size
        if isinstance(source, np.ndarray):
            source = image_from_array(source)
        image = decode_image(source, self.limits, draft=(size, size))
        return self.preprocess.to_uint8(image)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> (B, N, C) feature grid."""
        raise NotImplementedError("this pipeline has no encoder: pass features instead")

    @staticmethod
    def pooled_features(features: torch.Tensor) -> torch.Tensor:
        """(B, N, C) grid -> (B, C) pooled features, as the encoder pools them (grid mean)."""
        return features.float().mean(dim=1)

    # -- decode -----------------------------------------------------------------------------

    def search_config(
        self,
        beam_size: int | None = None,
        n_best: int = 1,
        max_len: int | None = None,
        length_penalty: float | None = None,
        return_attention: bool = False,
    ) -> SearchConfig:
        d = self.default_search
        return SearchConfig(
            beam_size=d.beam_size if beam_size is None else beam_size,
            max_len=d.max_len if max_len is None else max_len,
            n_best=n_best,
            length_penalty=d.length_penalty if length_penalty is None else length_penalty,
            suppress=d.suppress,
            return_attention=return_attention,
        )

    @torch.inference_mode()
    def search(self, features: torch.Tensor, config: SearchConfig) -> list[list[Hypothesis]]:
        """The one call of beam search: (B, N, C) features -> n-best hypotheses per image."""
        features = features.to(self.device, non_blocking=True).float()
        with self.precision_context():
            return decode(self.decoder, features, config)

    def caption_features(
        self, features: torch.Tensor, batch_size: int | None = None, **options: Any
    ) -> list[CaptionResult]:
        """Decode a (B, N, C) feature grid batch, ``batch_size`` rows at a time (default: all);
        options as :meth:`search_config`."""
        cfg = self.search_config(**options)
        slots = bool(self._slot_ids) and self.head is not None
        grounded = self.grounding is not None and hasattr(self.head, "weight")  # linear head
        n_best = cfg.n_best
        if grounded:  # the rules choose among the whole beam; the caller still gets n_best
            cfg = self.search_config(**{**options, "n_best": max(n_best, cfg.beam_size)})
        step = batch_size or max(1, features.size(0))
        grid = grid_shape(features.size(1))
        results: list[CaptionResult] = []
        for start in range(0, features.size(0), step):
            chunk = features[start : start + step].to(self.device, non_blocking=True).float()
            nbest = self.search(chunk, cfg)
            chunk_results = [self._result(hyps, grid) for hyps in nbest]
            pooled, probs = self._whole_image(chunk)  # once per chunk, for slots and tags
            named: dict[tuple[int, int], list[dict]] = {}
            if slots:
                named = self._fill_slots(chunk, nbest, chunk_results, probs, cfg.return_attention)
            self._describe(chunk_results, pooled, probs)
            if grounded:
                ground_results(chunk, nbest, chunk_results, self.head, probs, named, self.grounding)
            for res in chunk_results:
                res.alternatives = res.alternatives[:n_best]
            results.extend(chunk_results)
        return results

    @torch.inference_mode()
    def _whole_image(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The (B, C) pooled features and the head's (B, 1000) view of each whole picture."""
        if self.head is None and self.domain is None:
            return None, None
        pooled = self.pooled_features(features)
        return pooled, None if self.head is None else self.head(pooled)

    def _fill_slots(
        self,
        features: torch.Tensor,
        nbest: list[list[Hypothesis]],
        results: list[CaptionResult],
        image_probs: torch.Tensor,
        keep_attention: bool,
    ) -> dict[tuple[int, int], list[dict]]:
        """Name each object slot of every hypothesis from its attended region (see slots.py);
        returns the named slots of each (row, k) hypothesis that has any."""
        assert self.head is not None
        attention = self._slot_attention(features, nbest)
        all_named: dict[tuple[int, int], list[dict]] = {}
        for row, (hyps, res) in enumerate(zip(nbest, results, strict=True)):
            for k, hyp in enumerate(hyps):
                if (row, k) not in attention:
                    continue
                words = [self.vocab.itos[i] for i in hyp.tokens]
                filled, named = fill_slots(
                    words, attention[row, k], features[row], self.head, image_probs[row]
                )
                res.alternatives[k]["caption"] = " ".join(filled)
                all_named[row, k] = named
                if k == 0:
                    res.words, res.caption = filled, " ".join(filled)
                    res.slots = named or None
            if not keep_attention:
                res.attention, res.grid = None, None
        return all_named

    @torch.inference_mode()
    def _slot_attention(
        self, features: torch.Tensor, nbest: list[list[Hypothesis]]
    ) -> dict[tuple[int, int], torch.Tensor]:
        """(row, k) -> the (T, N) attention of each hypothesis that has a slot, its rows up to
        the last slot (fewer than its words when the search did not keep the attention).

        Keeping every beam's attention through the search would slow it for all captions
        (the history is reordered at each step); instead the few captions with slots are
        replayed once, teacher-forced, which gives the same attention the search saw. The replay
        goes through ``init_state`` / ``step``, the interface exported decoders have too, not
        the model's training ``forward``.
        """
        todo = [
            (row, k, hyp)
            for row, hyps in enumerate(nbest)
            for k, hyp in enumerate(hyps)
            if self._slot_ids.intersection(hyp.tokens)
        ]
        if not todo:
            return {}
        if all(hyp.attention is not None for _, _, hyp in todo):  # the search kept it anyway
            return {(row, k): hyp.attention for row, k, hyp in todo}
        # only the slots' rows are read: each caption is replayed up to its last slot
        upto = [1 + max(t for t, w in enumerate(h.tokens) if w in self._slot_ids) for *_, h in todo]
        steps = max(upto)
        tokens = torch.full((len(todo), steps), self.vocab.end_id, dtype=torch.long)
        for i, (_, _, hyp) in enumerate(todo):
            tokens[i, : upto[i]] = torch.tensor(hyp.tokens[: upto[i]], dtype=torch.long)
        tokens = tokens.to(features.device)
        rows = torch.tensor([row for row, _, _ in todo], device=features.device)
        with self.precision_context():
            state = self.decoder.init_state(features[rows])
            prev = torch.full_like(tokens[:, 0], self.vocab.start_id)
            alphas = []
            for t in range(steps):
                _, state, alpha = self.decoder.step(state, prev)
                alphas.append(alpha.float())
                prev = tokens[:, t]
        att = torch.stack(alphas, dim=1)  # (n, steps, N)
        return {(row, k): att[i, : upto[i]] for i, (row, k, _) in enumerate(todo)}

    def _describe(
        self,
        results: list[CaptionResult],
        pooled: torch.Tensor | None,
        image_probs: torch.Tensor | None,
    ) -> None:
        """Tags and the out-of-domain flag from the pooled features of the same grid."""
        if image_probs is not None:
            for res, tags in zip(results, batch_tags(image_probs, self.top_tags), strict=True):
                res.tags = tags
        if self.domain is not None and pooled is not None:
            distances = self.domain.distance(pooled).cpu().tolist()
            for res, d in zip(results, distances, strict=True):
                res.domain_distance = round(d, 4)
                res.out_of_domain = d > self.domain.threshold

    def caption_tensors(self, images: torch.Tensor, **options: Any) -> list[CaptionResult]:
        """(B, 3, S, S) uint8 batch -> one result per image."""
        return self.caption_features(self.encode(images), **options)

    def caption_batch(self, items: Sequence[torch.Tensor], **options: Any) -> list[CaptionResult]:
        """A list of (3, S, S) uint8 tensors (from :meth:`load_image`) -> results; for batchers."""
        if not items:
            return []
        return self.caption_tensors(torch.stack(list(items)), **options)

    def caption(
        self,
        images: ImageSource | Sequence[ImageSource],
        beam_size: int | None = None,
        n_best: int = 1,
        max_len: int | None = None,
        length_penalty: float | None = None,
        return_attention: bool = False,
        batch_size: int = 16,
        errors: Errors = "raise",
    ) -> CaptionResult | ErrorResult | list[CaptionResult | ErrorResult]:
        """Caption one image (-> a result) or a list of them (-> a list, in order).

        Sources are paths, bytes, PIL images or ``HxWx3`` uint8 RGB arrays (``HxW`` grey and
        ``HxWx4`` RGBA too; an ``NxHxWx3`` array is N images). An unreadable image raises
        ``MediaError`` naming the problem; with ``errors="return"`` it gives an
        :class:`ErrorResult` in its place instead, and the other images are captioned.
        """
        check_errors(errors)
        single = is_single_image(images)
        sources = [images] if single else list(images)  # type: ignore[arg-type]
        options = {
            "beam_size": beam_size,
            "n_best": n_best,
            "max_len": max_len,
            "length_penalty": length_penalty,
            "return_attention": return_attention,
        }
        self.search_config(**options).validate(len(self.vocab))
        results: list[CaptionResult | ErrorResult] = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start : start + batch_size]
            results.extend(
                per_item(chunk, self.load_image, lambda t: self.caption_batch(t, **options), errors)
            )
        return results[0] if single else results

    def __call__(
        self, images: ImageSource | Sequence[ImageSource], **options: Any
    ) -> CaptionResult | ErrorResult | list[CaptionResult | ErrorResult]:
        """``model(images, ...)`` is ``model.caption(images, ...)``, as a pipeline is called."""
        return self.caption(images, **options)

    # -- postprocess ------------------------------------------------------------------------

    def _result(self, hyps: list[Hypothesis], grid: tuple[int, int]) -> CaptionResult:
        best = hyps[0]
        words = [self.vocab.itos[i] for i in best.tokens]
        alternatives = [
            {"caption": self.vocab.decode(h.tokens), "log_prob": h.log_prob, "score": h.score}
            for h in hyps
        ]
        attention = None
        if best.attention is not None:
            attention = [[round(float(v), 5) for v in row] for row in best.attention]
        confidence = decoder_confidence(best)
        return CaptionResult(
            caption=" ".join(words),
            log_prob=best.log_prob,
            score=best.score,
            finished=best.finished,
            words=words,
            alternatives=alternatives,
            attention=attention,
            grid=grid if attention is not None else None,
            confidence=round(confidence, 4),
        )


class Captioner(BundleModel, CaptionPipeline):
    """Image captioning: a CNN encoder and an attention-LSTM decoder with beam search.

    ``manifest``: the bundle's typed manifest (``spec``), which gives the default search.
    """

    task = "caption"

    def __init__(
        self,
        encoder: Encoder,
        decoder: CaptionDecoder,
        vocab: Vocabulary,
        manifest: Manifest | dict | None = None,
        device: str | torch.device = "auto",
        limits: ImageLimits = DEFAULT_LIMITS,
        domain: DomainStats | None = None,
    ):
        dev = resolve_device(device)
        if isinstance(manifest, dict):
            manifest = Manifest.from_dict(manifest)
        self.spec = manifest
        search = self.search_defaults(manifest.search if manifest else Decoding(), vocab)
        self.encoder = prepare_encoder(encoder, dev)
        super().__init__(
            decoder.eval().to(dev), vocab, search, dev, encoder.preprocess, limits=limits
        )
        self.head = encoder.head
        self.domain = domain

    @classmethod
    def from_bundle(
        cls, bundle: str | os.PathLike | Bundle, device: str | torch.device = "auto"
    ) -> Captioner:
        """Load a caption bundle (hash-checked) and its encoder."""
        b = open_bundle(bundle, "caption")
        spec = b.spec
        vocab = manifest_part(b, lambda: Vocabulary.from_dict(spec.vocabulary or {}))
        config = manifest_part(b, lambda: CaptionDecoderConfig.from_dict(spec.model))
        if config.vocab_size != len(vocab):
            raise BundleError(
                f"{b.path}: decoder vocab_size {config.vocab_size}, vocabulary has {len(vocab)}"
            )
        encoder = bundle_encoder(b)
        if config.feature_dim != encoder.feature_dim:
            raise BundleError(
                f"{b.path}: decoder expects {config.feature_dim}-d features but encoder "
                f"{encoder.name} gives {encoder.feature_dim}"
            )
        decoder = bundle_module(b, CaptionDecoder(config), "decoder.safetensors", "decoder")
        domain = domain_stats(b.weights, b.path)
        if domain is not None and domain.feature_dim != encoder.feature_dim:
            raise BundleError(
                f"{b.path}: domain statistics do not fit {encoder.feature_dim}-d features"
            )
        return cls(encoder, decoder, vocab, manifest=spec, device=device, domain=domain)

    @property
    def preprocess(self) -> Preprocess:
        return self.encoder.preprocess

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> (B, N, C) feature grid on the model's device."""
        return encode_images(self.encoder, images, self.device)
