"""The README's Python snippets run as written (from the repository root), on the CPU."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it from Python") : text.index("## Serve it over HTTP")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_the_python_snippets_run_as_written(monkeypatch, capsys) -> None:
    blocks = python_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the snippets pick the CPU, as tests do
    namespace: dict = {}
    for block in blocks:  # the second block reuses the first one's import, as a reader would
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "growing" in out
    assert "cat" in out


@pytest.mark.slow
def test_the_sample_output_is_what_make_run_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    import captioner

    # `make run` installs the runtime only (no onnxruntime): torch encodes. ONNX Runtime's grid
    # differs by < 1e-4, which can move a log-prob's 4th decimal (tests/test_fast_encoder.py).
    monkeypatch.setenv("CAPTIONER_ENCODER_RUNTIME", "torch")
    text = (ROOT / "README.md").read_text()
    block = re.search(r"`make run` writes.*?```json\n(.*?)```", text, re.S).group(1)
    lines = block.splitlines()
    model = captioner.load(device="cpu")
    for line in lines[:-1]:  # caption rows ("..." stands for the rest of the tags)
        field = dict(
            re.findall(r'"(path|caption|log_prob|out_of_domain|confidence)": "?([^",]+)', line)
        )
        result = model.caption(ROOT / field["path"])
        assert result.caption == field["caption"]
        assert round(result.log_prob, 4) == float(field["log_prob"])
        assert round(result.confidence, 4) == float(field["confidence"])
        assert str(result.out_of_domain).lower() == field["out_of_domain"]
        assert result.tags[0]["name"] in line
    path = re.search(r'"path": "([^"]+)"', lines[-1]).group(1)
    label = re.search(r'"label": "([^"]+)"', lines[-1]).group(1)
    clf = captioner.load(captioner.default_bundle_dir("activity"), device="cpu")
    assert clf.classify(ROOT / path).label == label


def test_the_serve_synopsis_lists_every_flag() -> None:
    from service.serve import build_parser

    text = (ROOT / "README.md").read_text()
    synopsis = re.search(r"```bash\n(captioner serve \[.*?)```", text, re.S).group(1)
    flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert flags
    assert not {f for f in flags if f not in synopsis}


def _model_card_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_model_card", ROOT / "scripts" / "make_model_card.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_model_card_photo_table_is_what_the_shipped_model_says() -> None:
    pytest.importorskip("skimage", reason="the photographs come with the [data] extra")
    assert _model_card_script().main(["--check"]) == 0, "run python scripts/make_model_card.py"


def test_the_model_card_script_rewrites_only_its_table_and_flags_new_captions() -> None:
    card = _model_card_script()
    captions = {name: judged for name, (judged, _) in card.VERDICTS.items()}
    body, unjudged = card.table(captions)
    assert unjudged == []
    assert body.count("\n") == len(card.PHOTOS) + 1
    readme = (ROOT / "README.md").read_text()
    assert card.render(readme, body) == readme  # the README holds exactly this table
    horse = "`horse` (a silhouette)"
    body, unjudged = card.table({**captions, horse: "two dogs"})
    assert unjudged == [horse]
    changed = card.render(readme, body)
    assert '| `horse` (a silhouette) | "two dogs" | not judged yet' in changed
    before, after = readme.split(card.START)[0], readme.split(card.END)[1]
    assert changed.startswith(before)
    assert changed.endswith(after)
