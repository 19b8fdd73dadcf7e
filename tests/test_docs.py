"""Every Python block of the README and of ``docs/`` runs, so the documentation cannot drift.

The blocks of one page run in order, in one namespace, in a fresh folder. The files they name
(a paper checkpoint, a run folder, a dataset) are made here, with random weights and tiny data,
only for the pages that name them. A block preceded by ``<!-- not run: why -->`` is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import geminifusion as gf
from geminifusion.configs import get_preset
from geminifusion.data import generate_synthetic_dataset
from geminifusion.engine.train import train
from test_data_helpers import make_nyu
from test_pretrained import segformer_imagenet_state

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- not run: [^>]*-->\s*)?```python\n(.*?)```", re.S)


def paper_checkpoint(arch: str, classes: int, modalities=("rgb", "depth"), saver=True):
    def make(path: Path) -> None:
        with torch.no_grad():
            model = gf.build_segmentor(arch, classes, modalities=modalities)
        state = gf.to_reference_state_dict(model)
        if saver:  # the training script's layout; the DeLiVER branch saves the bare dict
            state = {"segmenter": {f"module.{k}": v for k, v in state.items()}, "epoch_start": 0}
        torch.save(state, path)

    return make


def tiny_run(path: Path, data: Path | None = None) -> None:
    config = get_preset("synthetic_tiny")
    if data is not None:
        generate_synthetic_dataset(data, num=10, size=(64, 64), seed=0)
        config = config.replace(data_root=str(data))
    train(config, path, progress=False)


def model_folder(path: Path) -> None:
    gf.save_pretrained(gf.build_segmentor("mit_b0", 40), path)


def imagenet_file(path: Path) -> None:
    mit = gf.VARIANTS["mit_b3"]
    torch.save(segformer_imagenet_state(mit.embed_dims, mit.depths, mit.sr_ratios), path)


# Name used in the documentation -> how to make it.
DOC_FILES: dict[str, Callable[[Path], None]] = {
    "nyudv2_mit_b3.pth.tar": paper_checkpoint("mit_b3", 40),
    "nyudv2_swin_tiny.pth.tar": paper_checkpoint("swin_tiny", 40),
    "geminifusion_b2_deliver_rgbdel.pth": paper_checkpoint(
        "deliver_mit_b2", 25, ("rgb", "depth", "event", "lidar"), saver=False
    ),
    "data/nyudv2": lambda p: (make_nyu(p, split="train"), make_nyu(p, split="val")),
    "runs/demo": lambda p: tiny_run(p / "fused", p / "data"),
    "runs/nyudv2_mit_b3": tiny_run,
    "nyu_b3": model_folder,
    "pretrained/mit_b3.pth": imagenet_file,
}
# Full-size weights take seconds each to make and load: the pages that need them run with
# ``-m slow`` (the README, the page everyone reads first, always runs).
EXPENSIVE = {
    "nyudv2_mit_b3.pth.tar",
    "nyudv2_swin_tiny.pth.tar",
    "geminifusion_b2_deliver_rgbdel.pth",
    "pretrained/mit_b3.pth",
}


def blocks(page: Path) -> list[tuple[int, str | None, str]]:
    """(line, skip reason or None, code) of each Python block."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        line = text[: match.start(2)].count("\n") + 1
        reason = match.group(1).strip()[len("<!-- not run:") : -3].strip() if match[1] else None
        found.append((line, reason, match.group(2)))
    return found


@pytest.fixture(scope="session")
def made_files(tmp_path_factory) -> Callable[[str, Path], None]:
    """Puts a documentation file into a page's folder, made once per session and linked."""
    store = tmp_path_factory.mktemp("doc_files")

    def provide(name: str, folder: Path) -> None:
        source = store / name
        if not source.exists():
            source.parent.mkdir(parents=True, exist_ok=True)
            previous = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny runs: one thread is fastest
            try:
                DOC_FILES[name](source)
            finally:
                torch.set_num_threads(previous)
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=source.is_dir())

    return provide


def names(page: Path) -> list[str]:
    """The DOC_FILES a page names (as a quoted path)."""
    text = page.read_text(encoding="utf-8")
    return [n for n in DOC_FILES if re.search(rf'"{re.escape(n)}[/"]', text)]


# Pages whose own blocks take long (the exporter traces a full-size model for half a minute).
SLOW_PAGES = {"deployment.md"}


def page_param(page: Path):
    expensive = page.name != "README.md" and bool(EXPENSIVE & set(names(page)))
    slow = expensive or page.name in SLOW_PAGES
    return pytest.param(page, id=page.name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page", [page_param(p) for p in PAGES if blocks(p)])
def test_python_blocks_run(page, tmp_path, monkeypatch, made_files):
    for name in names(page):
        made_files(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc__"}
    ran = 0
    for line, reason, code in blocks(page):
        if reason:
            continue
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as err:  # the page and line make the failure easy to find
            raise AssertionError(f"{page.relative_to(REPO)} line {line}: {err!r}") from err
        ran += 1
    assert ran, f"every Python block of {page.name} is marked not run"


def test_readme_is_a_short_start():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the manual belongs in docs/"
    for page in ("getting-started", "models", "weights", "data", "training", "design"):
        assert f"docs/{page}.md" in "\n".join(lines), f"README links no docs/{page}.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_user_documents_speak_to_users(page):
    """Words for maintainers ("the issue's target", "this round") stay out of user pages."""
    text = page.read_text(encoding="utf-8").lower()
    for phrase in ("issue", "target", "this round", "round of work"):
        assert phrase not in text, f"{page.name} says {phrase!r}"
