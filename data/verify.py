"""Decode every image of a dataset once before training, so that a corrupt file is reported by name at start-up
instead of stopping a long run hours later.

`verify_images` decodes each file completely with the reader training uses (core.io.read_image: a truncated
PNG or JPEG fails there, as PIL's LOAD_TRUNCATED_IMAGES is kept False), in a pool of threads, with a progress
bar on a terminal. Threads, not processes: PIL decodes and converts in C with the GIL released (about 80% of a
PNG's read_image time, 55-70% of a JPEG's, by cProfile), and threads need no start-up, pickling, or fork from a
process that already holds CUDA and logger threads.

Files that decode are remembered in a JSON cache keyed by absolute path, size and modification time (ns); the
next run decodes only new or changed files. The cache lives in the user's cache folder,
$XDG_CACHE_HOME/image-restoration/verify/ (default ~/.cache/...), one file per dataset folder (named after the
folder and a hash of its absolute path): never inside the dataset, which is often read-only or shared. Deleting
it only costs one more full check. Cache writes are atomic, so processes sharing it cannot corrupt it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import ImageFile, UnidentifiedImageError

from core.errors import DataError
from core.io import read_image
from core.progress import bar

log = logging.getLogger(__name__)

CACHE_VERSION = 1
LISTED = 10  # bad files named in an error message (all of them are logged)
MAX_WORKERS = 16  # more threads only queue for the part of a decode that holds the GIL (about a fifth)


def default_cache_file(paths: Iterable[str | Path]) -> Path:
    """The cache for a set of files: named after their deepest common folder (see the module docstring)."""
    common = Path(os.path.commonpath([os.path.abspath(p) for p in paths]))
    digest = hashlib.sha1(str(common).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "image-restoration" / "verify" / f"{common.name or 'root'}-{digest}.json"


def _load_cache(cache_file: Path) -> dict[str, list[int]]:
    try:
        data = json.loads(cache_file.read_text())
        return dict(data["files"]) if data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # missing or unreadable: everything is checked again


def _save_cache(cache_file: Path, files: dict[str, list[int]]) -> None:
    tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": files}))
        os.replace(tmp, cache_file)
    except OSError as err:
        log.warning("could not write the image check cache %s (%s): the next run checks every file again",
                    cache_file, err)
        tmp.unlink(missing_ok=True)


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def verify_images(paths: Iterable[str | Path], cache_file: str | Path | None = None, workers: int | None = None,
                  decode: Callable[[Path], object] | None = None,
                  progress: bool | None = None) -> list[tuple[Path, str]]:
    """Fully decode each file (skipping those the cache knows unchanged); return [(path, reason)] of the files
    that fail, in input order. `workers` threads (default: the CPUs this process may use, at most MAX_WORKERS);
    `cache_file` None for `default_cache_file(paths)`; `decode` None for core.io.read_image, what training reads
    with; `progress` None shows the bar on a terminal only."""
    paths, decode = list(dict.fromkeys(Path(p) for p in paths)), decode or read_image
    if not paths:
        return []
    cache_path = Path(cache_file) if cache_file is not None else default_cache_file(paths)
    cache = _load_cache(cache_path)
    keys = {p: os.path.abspath(p) for p in paths}
    stamps = {p: _stamp(keys[p]) for p in paths}
    todo = [p for p in paths if stamps[p] is None or cache.get(keys[p]) != stamps[p]]

    def check(path: Path) -> str | None:
        if stamps[path] is None:
            return "file not found"
        try:
            decode(path)  # type: ignore[misc]
        except Exception as err:  # whatever the decoder raises, the file cannot be used
            cause = err.__cause__ or err
            return "not an image PIL recognises" if isinstance(cause, UnidentifiedImageError) else str(cause)
        return None

    reasons: dict[Path, str] = {}
    if todo:
        workers = workers or min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else os.cpu_count() or 1)
        log.info("decoding %d images once to find corrupt files (%d already checked; cache %s)", len(todo),
                 len(paths) - len(todo), cache_path)
        truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = bar(pool.map(check, todo), total=len(todo), desc="checking images", unit="img",
                               disable=None if progress is None else not progress)
                for path, reason in zip(todo, results):
                    if reason is None:
                        cache[keys[path]] = stamps[path]  # type: ignore[assignment]
                    else:
                        reasons[path] = reason
                        cache.pop(keys[path], None)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
        _save_cache(cache_path, cache)
    return [(p, reasons[p]) for p in paths if p in reasons]


def require_decodable(paths: Iterable[str | Path], owner: str, **options: object) -> None:
    """`verify_images`, then one DataError naming the bad files (the first LISTED, all in the log) and the fix."""
    paths = list(paths)
    bad = verify_images(paths, **options)  # type: ignore[arg-type]
    if bad:
        for path, reason in bad:
            log.error("corrupt image %s: %s", path, reason)
        shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:LISTED])
        more = f"; and {len(bad) - LISTED} more, all listed in the log" if len(bad) > LISTED else ""
        raise DataError(f"{owner}: {len(bad)} of {len(paths)} training/validation images cannot be decoded: "
                        f"{shown}{more}. Re-download them, or delete each with its LQ/GT partner; "
                        f"data.verify=false skips this check.")
