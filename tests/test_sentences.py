"""The clip sentence builder: every claim needs its reading, weak readings hedge or vanish."""

from __future__ import annotations

import pytest

from captioner.inference.sentences import (
    CAMERA_PHRASES,
    MOTION_PHRASES,
    Reading,
    SentenceConfig,
    Subject,
    WindowFacts,
    clip_sentence,
    window_sentence,
)


def facts(camera=None, motion=None, subject=None, scene=None) -> WindowFacts:
    return WindowFacts(0.0, 2.0, camera, motion, subject, scene)


def test_a_sure_camera_move_over_a_grounded_scene():
    f = facts(Reading("pan_right", 0.9), Reading("none", 0.8), scene="a mountain")
    assert window_sentence(f) == "The camera pans right over a mountain."


def test_the_moving_thing_comes_first_and_is_named_from_its_evidence():
    person = Subject("a coat", 0.9, person=True)
    f = facts(Reading("static", 0.95), Reading("left", 0.8), person)
    assert window_sentence(f) == "A person moves to the left; the camera is still."
    car = facts(None, Reading("approach", 0.7), Subject("a car", 0.75))
    assert window_sentence(car) == "A car approaches."


def test_an_unnamed_or_weakly_named_thing_is_something():
    assert window_sentence(facts(None, Reading("recede", 0.9), None)) == "Something moves away."
    weak = facts(None, Reading("up", 0.9), Subject("a kite", 0.2))
    assert window_sentence(weak) == "Something moves up."
    hedged = facts(None, Reading("right", 0.9), Subject("a dog", 0.5))
    assert window_sentence(hedged) == "Something, probably a dog, moves to the right."


def test_readings_between_probable_and_sure_are_hedged():
    f = facts(Reading("zoom_in", 0.5), Reading("left", 0.45), Subject("a car", 0.9))
    assert window_sentence(f) == "A car probably moves to the left; the camera probably zooms in."


def test_no_claim_without_its_reading():
    # too weak to say anything: no camera words, no motion verb, no subject
    f = facts(Reading("pan_left", 0.3), Reading("left", 0.2), Subject("a car", 0.99))
    assert window_sentence(f) == "Unsure."
    assert window_sentence(facts()) == "Unsure."
    # the scene needs a moving camera to be said, and a name is never said without motion
    still = facts(Reading("static", 0.9), Reading("none", 0.3), Subject("a car", 0.99), "a lake")
    assert window_sentence(still) == "The camera is still."
    # an unknown label is never turned into words
    assert window_sentence(facts(Reading("dolly_zoom", 0.99))) == "Unsure."


def test_no_motion_is_never_claimed_from_its_absence():
    # slow motion goes unmeasured: a sure "none" says nothing about the thing, only the camera
    both = facts(Reading("static", 0.9), Reading("none", 0.9))
    assert window_sentence(both) == "The camera is still."
    shaky = facts(Reading("handheld", 0.9), Reading("none", 0.9))
    assert window_sentence(shaky) == "The camera is handheld."


def test_clip_sentence_reports_shot_changes_between_shots():
    a = facts(Reading("pan_left", 0.9))
    b = WindowFacts(1.2, 3.0, Reading("static", 0.9), Reading("right", 0.8), Subject("a car", 0.9))
    text = clip_sentence([a, b], cuts=[1.2])
    second = "A car moves to the right; the camera is still."
    assert text == f"The camera pans left. Shot change at 1.2 s. {second}"
    assert clip_sentence([]) == "Unsure."
    with pytest.raises(ValueError, match="cut times"):
        clip_sentence([a, b], cuts=[1.0, 2.0])


def test_every_label_has_a_plain_and_a_hedged_phrase_and_a_config_is_checked():
    for plain, hedged in [*CAMERA_PHRASES.values(), *MOTION_PHRASES.values()]:
        assert "probably" in hedged
        assert "probably" not in plain
    with pytest.raises(ValueError, match="probable"):
        SentenceConfig(sure=0.3, probable=0.5)
