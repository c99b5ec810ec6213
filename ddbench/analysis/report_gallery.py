"""The gallery of report.html: per section, the methods side by side at each IPC, each the lowest seed's synthetic
set with one row of thumbnails per class (its class name as the label), from the stored set itself.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .html_parts import Raw, data_uri_png, join, tag
from .report_cells import Section, variant_name


# Images per class shown in a gallery cell: the run's own grid.png shows as many (ddbench/store/synsets.py: save_grid,
# max_per_class=10); a cell shows at most GALLERY_MAX_IMAGES in all (CIFAR-100: 1 per class), so a page over many
# methods and IPCs stays a few MB at most (docs/compare.md#reporthtml).
GALLERY_PER_CLASS = 10

GALLERY_MAX_IMAGES = 100


@dataclass
class ClassRow:
    name: str
    shown: int
    total: int
    png: bytes | None  # one strip of `shown` thumbnails


@dataclass
class GalleryCell:
    title: str
    note: str
    rows: list[ClassRow]
    fallback_png: bytes | None = None  # the run's grid.png when its synthetic set cannot be read
    problem: str | None = None


def _strip_png(images01) -> bytes:
    """(n, C, H, W) floats in [0, 1] as one PNG strip, 1 px of white between images."""
    import numpy as np
    from PIL import Image

    n, c, h, w = images01.shape
    pixels = (np.clip(images01, 0.0, 1.0) * 255).round().astype(np.uint8)
    strip = np.full((max(c, 1), h, n * (w + 1) - 1), 255, dtype=np.uint8)
    for i in range(n):
        strip[:, :, i * (w + 1): i * (w + 1) + w] = pixels[i]
    array = strip[0] if c != 3 else strip.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def set_rows(artifact: Path, per_class: int = GALLERY_PER_CLASS) -> list[ClassRow]:
    """The class rows of a stored synthetic set (ddbench/store/synsets.py: load_synset), back in pixel space with the
    dataset's mean and std saved beside it (min-max scaled when a file predates that)."""
    import numpy as np

    from ..store.synsets import load_synset

    syn, saved = load_synset(artifact)
    images = syn.images.detach().float().cpu().numpy()
    labels = syn.labels.detach().cpu()
    labels = (labels.argmax(1) if labels.ndim == 2 else labels).numpy()  # soft labels: each image's argmax class
    info = saved.get("dataset") or {}
    if info.get("mean") is not None and info.get("std") is not None:
        mean = np.asarray(info["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(info["std"], dtype=np.float32).reshape(1, -1, 1, 1)
        images = images * std + mean
    else:
        lo, hi = float(images.min()), float(images.max())
        images = (images - lo) / (hi - lo or 1.0)
    names = [str(n) for n in (info.get("class_names") or [])]
    num_classes = max(len(names), int(labels.max()) + 1 if len(labels) else 0)
    per_class = max(1, min(per_class, GALLERY_MAX_IMAGES // max(num_classes, 1)))
    rows = []
    for c in range(num_classes):
        idx = np.nonzero(labels == c)[0]
        shown = idx[:per_class]
        rows.append(ClassRow(names[c] if c < len(names) else str(c), len(shown), len(idx),
                             _strip_png(images[shown]) if len(shown) else None))
    return rows


def gallery_cell(sec: Section, variant: tuple[str, float | None], ipc: int, report_dir: Path,
                 per_class: int) -> GalleryCell | None:
    """The lowest seed's set of a cell that has one (the seed report.md's grid shows)."""
    cell = sec.cell(variant, ipc)
    if cell is None or not cell.ok:
        return None
    runs = sorted(cell.ok, key=lambda r: (r.seed or 0))
    budget = variant[1]
    title = variant_name(variant)
    reached = f"budget {budget:g} s: reached IPC {ipc}" if budget is not None else f"IPC {ipc}"
    problem = None
    for r in runs:
        if not r.artifact or not Path(r.artifact).is_file():
            continue
        try:
            rows = set_rows(Path(r.artifact), per_class)
        except Exception as exc:  # noqa: BLE001 - a damaged file is said on the page, not a failed report
            problem = f"synthetic set of run {r.run_id} unreadable: {type(exc).__name__}: {exc}"
            continue
        most = max((row.shown for row in rows), default=0)
        return GalleryCell(title, f"{reached} · seed {r.seed} · run {r.run_id} · at most {most} image(s) per class "
                                  "shown (each row: shown of the class's images)", rows)
    grid = report_dir / cell.grid if cell.grid is not None else None
    if grid is not None and grid.is_file():  # the copied grid.png: one row per class, no names
        return GalleryCell(title, f"{reached} · seed {runs[0].seed} · run {runs[0].run_id} · the run's grid.png "
                                  "(synset.pt not found: rows are classes in label order)", [],
                           fallback_png=grid.read_bytes(), problem=problem)
    return GalleryCell(title, f"{reached}", [], problem=problem or "no synthetic set file found for any seed "
                                                                   f"(runs {', '.join(r.run_id for r in runs)})")


def gallery_html(sec: Section, report_dir: Path, per_class: int) -> Raw:
    """Per IPC, the methods side by side, so that what each made at equal count lines up for the eye."""
    groups = []
    for ipc in sec.ipcs:
        cards = []
        for v in sec.variants:
            g = gallery_cell(sec, v, ipc, report_dir, per_class)
            if g is None:
                continue
            body: list[Any] = [tag("h4", g.title), tag("p", g.note, cls="note")]
            if g.rows:
                most = max(row.shown for row in g.rows)
                trs = [tag("tr", join([tag("th", row.name, scope="row"),
                                       tag("td", tag("img", src=data_uri_png(row.png),
                                                     alt=f"{g.title}, class {row.name}",
                                                     cls="strip" if most > 3 else "strip big")
                                                 if row.png else "(none)"),
                                       tag("td", f"{row.shown} of {row.total}", cls="count")]))
                       for row in g.rows]
                body.append(tag("table", tag("tbody", join(trs)), cls="synset"))
            elif g.fallback_png:
                body.append(tag("img", src=data_uri_png(g.fallback_png), alt=f"{g.title} image grid", cls="grid"))
            if g.problem:
                body.append(tag("p", g.problem, cls="problem"))
            cards.append(tag("figure", join(body), cls="card"))
        if cards:
            groups.append(join([tag("h4", f"IPC {ipc}", cls="ipc"), tag("div", join(cards), cls="cards")]))
    return join(groups)
