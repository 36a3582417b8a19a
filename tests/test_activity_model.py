"""The activity model: shapes, order sensitivity of the heads, loss, variants, config checks."""

from __future__ import annotations

import pytest
import torch

from captioner.models.activity import ActivityModel, ActivityModelConfig

B, T, N, C, K = 2, 5, 49, 1280, 4


def tiny_config(**changes) -> ActivityModelConfig:
    base = {
        "num_classes": K,
        "feature_dim": C,
        "cell_dim": 8,
        "embed_dim": 16,
        "hidden_dim": 12,
        "dropout": 0.0,
    }
    return ActivityModelConfig(**{**base, **changes})


def model_for(seed: int = 0, **changes) -> ActivityModel:
    torch.manual_seed(seed)
    return ActivityModel(tiny_config(**changes)).eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """(B, T, 49, 1280) features whose frames differ, so their order carries information."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, T, N, C, generator=g).relu() * torch.linspace(0.2, 3.0, T)[:, None, None]


def test_frame_grids_give_one_logit_row_per_clip(frames) -> None:
    out = model_for()(frames)
    assert out.logits.shape == (B, K)
    assert out.loss is None
    assert torch.isfinite(out.logits).all()


def test_mean_head_is_blind_to_frame_order(frames) -> None:
    model = model_for(head="mean")
    forward = model(frames).logits
    backward = model(frames.flip(1)).logits
    torch.testing.assert_close(backward, forward, rtol=1e-5, atol=1e-6)


def test_rnn_head_sees_frame_order(frames) -> None:
    model = model_for(head="rnn")
    forward = model(frames).logits
    backward = model(frames.flip(1)).logits
    assert (forward - backward).abs().max() > 1e-4


def test_labels_give_the_cross_entropy_loss(frames) -> None:
    model = model_for()
    labels = torch.tensor([0, 3])
    out = model(frames, labels)
    assert out.loss is not None
    assert out.loss.ndim == 0
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.classifier[1].weight.grad is not None


@pytest.mark.parametrize(
    "variant",
    [
        {"rnn": "gru"},
        {"bidirectional": True},
        {"rnn": "gru", "bidirectional": True, "layers": 2},
        {"grid": 1},
    ],
    ids=["gru", "bilstm", "bigru-2layers", "grid1"],
)
def test_variants_run_and_learn(frames, variant) -> None:
    model = model_for(**variant)
    out = model(frames, torch.tensor([1, 2]))
    assert out.logits.shape == (B, K)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_bidirectional_head_is_order_sensitive_too(frames) -> None:
    model = model_for(bidirectional=True)
    assert (model(frames).logits - model(frames.flip(1)).logits).abs().max() > 1e-4


def test_other_grid_sizes_are_accepted(frames) -> None:
    """A 4x4 or 1x1 encoder grid is square, so it is pooled to the configured cells."""
    model = model_for()
    assert model(frames[:, :, :16]).logits.shape == (B, K)
    assert model(frames[:, :, :1]).logits.shape == (B, K)


@pytest.mark.parametrize(
    ("bad", "word"),
    [
        ({"rnn": "xyz"}, "rnn"),
        ({"head": "abc"}, "head"),
        ({"num_classes": 1}, "classes"),
    ],
)
def test_bad_configs_are_refused(bad, word) -> None:
    with pytest.raises(ValueError, match=word):
        tiny_config(**bad)


def test_a_non_square_grid_is_refused(frames) -> None:
    with pytest.raises(ValueError, match="square grid"):
        model_for()(frames[:, :, :48])


def test_config_round_trips_through_a_dict() -> None:
    config = tiny_config(rnn="gru", bidirectional=True, head="mean", layers=2)
    d = config.to_dict()
    assert d["rnn"] == "gru"
    assert d["num_classes"] == K
    assert ActivityModelConfig.from_dict(d) == config


def test_unknown_config_keys_are_refused() -> None:
    d = {**tiny_config().to_dict(), "hiden_dim": 3}
    with pytest.raises(ValueError, match="hiden_dim"):
        ActivityModelConfig.from_dict(d)


def test_weights_load_into_a_model_built_from_the_same_config(frames) -> None:
    """What a bundle relies on: config dict + state_dict rebuild the same model."""
    model = model_for(seed=3)
    rebuilt = ActivityModel(ActivityModelConfig.from_dict(model.config.to_dict())).eval()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(frames).logits, model(frames).logits)


def test_reversal_averaging_uses_the_clip_played_backwards() -> None:
    from captioner.models.activity import ActivityModel, ActivityModelConfig

    torch.manual_seed(0)
    cfg = {
        "num_classes": 3,
        "feature_dim": 8,
        "grid": 2,
        "cell_dim": 4,
        "embed_dim": 8,
        "hidden_dim": 8,
    }
    plain = ActivityModel(ActivityModelConfig(**cfg)).eval()
    tta = ActivityModel(ActivityModelConfig(**cfg, reverse_map=[1, 0, 2])).eval()
    tta.load_state_dict(plain.state_dict())
    clip = torch.randn(2, 5, 4, 8)
    with torch.no_grad():
        forwards = plain(clip).logits.softmax(-1)
        backwards = plain(clip.flip(1)).logits.softmax(-1)
        averaged = tta.probabilities(clip)
    assert torch.allclose(averaged, 0.5 * (forwards + backwards[:, [1, 0, 2]]), atol=1e-6)
    assert torch.allclose(averaged.sum(-1), torch.ones(2))
    # A clip and its reversal get mirrored predictions: left for one is right for the other.
    with torch.no_grad():
        mirrored = tta.probabilities(clip.flip(1))
    assert torch.allclose(mirrored, averaged[:, [1, 0, 2]], atol=1e-6)
    assert torch.allclose(plain.probabilities(clip), forwards, atol=1e-6)
    with pytest.raises(ValueError, match="permutation"):
        ActivityModelConfig(**cfg, reverse_map=[0, 0, 2])
