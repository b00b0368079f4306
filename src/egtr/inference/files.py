"""Scene graphs of many image files: `egtr predict`'s engine (one JSON and drawings per image, in a folder).

Images that cannot be used (missing, corrupt, over the pixel limit, too thin to resize) are reported with their path
and skipped; every other image is still processed. Decoding runs ahead in threads while the model works.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from egtr.errors import EgtrError
from egtr.extras import require_extra
from egtr.images import describe_source, is_image_file_name
from egtr.inference.predictor import Predictor, PreparedImage, batched
from egtr.stopping import finish_before_stopping

if TYPE_CHECKING:
    from egtr.inference.boxes_file import ImageBoxes
    from egtr.inference.given_boxes import GivenObjects

logger = logging.getLogger(__name__)


def expand_image_paths(inputs: Sequence[str | Path], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """Turn command-line inputs into image files.

    A file is taken as given (whatever its suffix, so that a misnamed image is still tried); a folder gives the
    files with an image suffix inside it (sorted; with `recursive`, also in sub-folders); anything else is tried as
    a glob pattern (for shells that pass patterns through unexpanded).

    Returns:
        (unique files in input order, inputs that matched nothing).
    """
    import glob

    paths: list[Path] = []
    unmatched: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and is_image_file_name(p))
        else:
            found = sorted(Path(match) for match in glob.glob(str(item), recursive=recursive) if Path(match).is_file())
        if not found:
            unmatched.append(str(item))
        paths.extend(found)
    unique = list(dict.fromkeys(paths))  # keep the first occurrence of a file named twice
    return unique, unmatched


@dataclass
class FilesReport:
    """What `predict_files` did: one JSON (and drawings) per processed image, and the files it skipped."""

    outputs: dict[str, list[Path]]  # image path -> files written for it
    failures: dict[str, str]  # image path -> why it was skipped (unreadable, or its results could not be written)
    rejected: dict[str, str] = field(default_factory=dict)  # image path -> why its given boxes were refused


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: str | Path,
    *,
    draw_formats: Sequence[str] = ("png",),
    max_draw_relations: int | None = 40,
    dpi: int = 120,
    progress: bool = True,
    decode_workers: int = 2,
    given_boxes: Mapping[Path, ImageBoxes] | None = None,
    report: FilesReport | None = None,
) -> FilesReport:
    """Predict every image file, writing `<out_dir>/<name>.json` and `<out_dir>/<name>.<format>` drawings.

    Why this is long: the documented arguments; the code (about 65 lines) is one loop that decodes ahead, predicts,
    writes and reports each image.

    Images that cannot be read are logged and recorded in the report; the others are still processed. Output
    names are the image stems, made unique with the parent folder name (and a counter) where two images share one.

    Args:
        predictor: the model wrapper; its `batch_size` images go through one forward pass.
        paths: image files (see `expand_image_paths`).
        out_dir: created if missing.
        draw_formats: drawing formats ("png", "svg", "pdf"); empty = JSON only.
        max_draw_relations: relations shown in a drawing (the JSON keeps all of them).
        dpi: resolution of raster drawings.
        progress: show a tqdm progress bar.
        decode_workers: threads that decode and resize the next images while the model runs (PIL releases the
            GIL while decoding and resizing, so this keeps a second core busy); 0 decodes in the calling thread.
        given_boxes: the objects given for every path (`egtr.inference.boxes_file.boxes_for_images`): relations between
            them instead of detected objects. An image whose boxes are unusable is reported and skipped.
        report: filled in as images are done (default: a new one), so that a caller still has it when the run is
            stopped (`egtr.stopping.Stopped`) before this function returns.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = [fmt.lower().lstrip(".") for fmt in draw_formats]
    if formats:
        require_extra("viz", "drawing scene graphs")
    stems = _unique_stems(paths)
    report = report if report is not None else FilesReport(outputs={}, failures={})
    # logging_redirect_tqdm: warnings about skipped files print above the bar instead of breaking it
    with (
        logging_redirect_tqdm(),
        tqdm(total=len(paths), unit="image", disable=not progress, dynamic_ncols=True) as bar,
    ):
        # Decoding runs ahead in threads while the model works on the current chunk.
        for chunk in batched(_prepare_ahead(predictor, paths, decode_workers), predictor.batch_size):
            prepared: list[tuple[Path, PreparedImage]] = []
            for path, item in chunk:
                if isinstance(item, Exception):
                    report.failures[describe_source(path)] = str(item)
                    logger.warning("skipped %s", item)
                    bar.update(1)
                else:
                    prepared.append((path, item))
            given = None
            if given_boxes is not None:
                checked = len(prepared)
                prepared, given = _check_given_boxes(predictor, prepared, given_boxes, report.rejected)
                bar.update(checked - len(prepared))  # the images skipped for their boxes
            if not prepared:
                continue
            items = [item for _, item in prepared]
            graphs = predictor.postprocess(predictor.forward(items), items, given)
            for (path, item), graph in zip(prepared, graphs):
                written = [out_dir / f"{stems[path]}.json"]
                # SIGTERM / Ctrl-C (egtr.stopping) take effect between images, never within one image's files.
                with finish_before_stopping():
                    try:
                        graph.to_json(written[0])
                        for fmt in formats:
                            written.append(out_dir / f"{stems[path]}.{fmt}")
                            graph.draw(written[-1], image=item.image, max_relations=max_draw_relations, dpi=dpi)
                    except (OSError, ValueError, TypeError, UnicodeError) as error:
                        # One image whose outputs cannot be written must not stop the images after it (issue #13.9).
                        reason = f"{describe_source(written[-1])}: cannot write the result ({error})"
                        report.failures[describe_source(path)] = reason
                        logger.warning("skipped %s", reason)
                    else:
                        report.outputs[str(path)] = written
                bar.update(1)
    return report


def _check_given_boxes(
    predictor: Predictor,
    prepared: list[tuple[Path, PreparedImage]],
    given_boxes: Mapping[Path, ImageBoxes],
    failures: dict[str, str],
) -> tuple[list[tuple[Path, PreparedImage]], list[GivenObjects]]:
    """The images whose given boxes pass `Predictor.check_given`, with their checked objects; the others go to
    `failures` (with the boxes file's record in the message)."""
    from egtr.inference.given_boxes import GivenBoxesError

    kept, given = [], []
    for path, item in prepared:
        entry = given_boxes[path]
        try:
            (objects,) = predictor.check_given([item], [entry.boxes], None if entry.labels is None else [entry.labels])
        except GivenBoxesError as error:
            failures[describe_source(path)] = f"{entry.record}: {error}"
            logger.warning("skipped %s", failures[describe_source(path)])
            continue
        kept.append((path, item))
        given.append(objects)
    return kept, given


def _prepare_ahead(
    predictor: Predictor, paths: Sequence[Path], workers: int
) -> Iterator[tuple[Path, PreparedImage | Exception]]:
    """Yield (path, prepared image or the error that made it unreadable) in input order, decoding up to
    `2 * workers` images ahead in a thread pool."""

    def prepare(path: Path) -> PreparedImage | Exception:
        try:
            return predictor.prepare(path)
        except (EgtrError, OSError) as error:  # an unusable image is reported, never a crash
            return error

    if workers <= 0:
        yield from ((path, prepare(path)) for path in paths)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="egtr-decode") as pool:
        pending: deque = deque()
        for path in paths:
            pending.append((path, pool.submit(prepare, path)))
            if len(pending) > 2 * workers:
                done_path, future = pending.popleft()
                yield done_path, future.result()
        while pending:
            done_path, future = pending.popleft()
            yield done_path, future.result()


def _unique_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """Output name per image: the stem, or `<parent>_<stem>` / `<stem>_<n>` where stems collide."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        name = path.stem if counts[path.stem] == 1 else f"{path.parent.name}_{path.stem}{path.suffix.replace('.', '_')}"
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{name}_{number}"
        taken.add(candidate)
        names[path] = candidate
    return names
