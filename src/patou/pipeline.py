"""Stream records through decode -> detect -> classify, with decoding overlapped and a checkpoint.

Decoding (Pillow releases the GIL) runs in a small thread pool a few images ahead of inference,
through a bounded window, so memory stays flat on any number of images. Each finished record is
appended to a JSON-lines checkpoint; `resume` reuses the lines whose file is unchanged, which
makes a killed run end with the same outputs as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

from . import __version__
from .detections_in import GivenBoxes, decide_direct
from .digest import file_sha256
from .media import DECODE_SIDE, decode
from .models.classifier import Classifier
from .models.detector import FAST_CARD, Detector, MultiSizeDetector, parse_detector_size
from .outputs.atomic import atomic_output
from .record import Detection, ImageRecord
from .video import VideoSampling, is_video, read_frames

CHECKPOINT_VERSION = 1


class Models:
    """The persistent ONNX Runtime sessions of a run (created once, reused for every image)."""

    def __init__(self, model: str | Path | None = None, threads: int | None = None, flip: bool = True,
                 fast: bool = False, video: VideoSampling | None = None, given: GivenBoxes | None = None,
                 detector_size: str | int | None = None, max_pixels: int | None = None,
                 images_at_once: int | None = 1):
        """`threads`: CPU threads in all (default: every core). `images_at_once`: images `process`
        analyses side by side, each session call then on threads // images_at_once threads; None:
        one image per thread. One image at a time with every thread is the shortest wait for one
        photo (the guard); one per thread is the most photos per second (a batch run): single-thread
        calls never wait for a parallel op's slowest thread, and one image's decoding overlaps the
        other's inference with nothing to schedule (measured: benchmarks/throughput.py)."""
        self.max_pixels = max_pixels  # decode cap (media.MAX_PIXELS when None)
        total = threads or os.cpu_count() or 1
        self.images_at_once = max(1, min(int(images_at_once or total), total))
        if self.images_at_once > 1:
            threads = max(1, total // self.images_at_once)
        sizes = parse_detector_size(detector_size)
        card = FAST_CARD if fast else None
        self.detector = (MultiSizeDetector(card, threads, sizes) if sizes and len(sizes) > 1
                         else Detector(card, threads=threads, input_size=sizes[0] if sizes else None))
        # decode at least as large as the detector input (a 1280 input fed from 1024 px gains nothing)
        self.decode_side = max(DECODE_SIDE, self.detector.input_size[0], self.detector.input_size[1])
        self.classifier = Classifier(model, threads=threads, flip=flip)
        self.video = video or VideoSampling()
        self.given = given  # boxes from a MegaDetector file or --no-detector, used instead of the detector

    def fingerprint(self, classify_threshold: float) -> str:
        """What per-image results depend on: a checkpoint made with other models is not reused."""
        parts = [__version__, str(classify_threshold), str(self.classifier.flip)]
        if self.video != VideoSampling():  # default sampling keeps the fingerprints of photo-only runs
            parts.append(self.video.key())
        if self.given is not None:
            parts.append(self.given.key())
        if self.max_pixels is not None:  # a photo refused under one cap may decode under another
            parts.append(f"max_pixels:{self.max_pixels}")
        if self.detector.input_size != tuple(self.detector.card.input_size) or hasattr(self.detector, "passes"):
            parts.append(f"detector_size:{[d.input_size for d in getattr(self.detector, 'passes', [self.detector])]}")
        for card in (self.detector.card, self.classifier.card):
            parts += [card.name, card.version, file_sha256(card.onnx_path)[:16], json.dumps(card.extra, sort_keys=True)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def load(self, record: ImageRecord):
        """Decode and letterbox for the detector: the work that runs in the decoding threads.

        A photo gives (image, prepared); a video a list of (frame_number, image, prepared)."""
        if record.failure:  # already failed before decoding (e.g. a MegaDetector failure entry)
            return None
        prepare = self.detector.preprocess
        if self.given is not None and (self.given.whole_image or not is_video(record.path)) \
                and self.given.covers(record):
            prepare = lambda img: self.given.boxes(record)  # noqa: E731  a list of boxes, not a tensor
        if is_video(record.path):
            frames = read_frames(record, self.video)
            return [(n, img, prepare(img)) for n, img in frames] or None
        img = decode(record, self.decode_side, max_pixels=self.max_pixels)
        return (img, prepare(img)) if img is not None else None

    def analyse(self, loaded, record: ImageRecord, classify_threshold: float) -> None:
        """Detect, then classify every box the verdict may use (conf >= classify_threshold)."""
        if isinstance(loaded, list):  # a video: every sampled frame, boxes tagged with their frame
            record.detections = []
            for n, img, prepared in loaded:
                for d in self._analyse_frame(img, prepared, classify_threshold):
                    d.frame_number = n
                    record.detections.append(d)
            return
        record.detections = self._analyse_frame(*loaded, classify_threshold)

    def analyse_safely(self, loaded, record: ImageRecord, classify_threshold: float) -> None:
        """analyse(), where a model error costs this file (a `failure`), not the run or the guard."""
        try:
            self.analyse(loaded, record, classify_threshold)
        except Exception as e:
            record.detections, record.failure = [], f"model error: {type(e).__name__}: {e}"

    def _analyse_frame(self, img, prepared, classify_threshold: float) -> list[Detection]:
        if isinstance(prepared, list):  # given boxes: person/vehicle decided, other categories kept as they are
            detections = prepared
            for d in detections:
                decide_direct(d, self.classifier.labels)
            boxes = [d for d in detections if d.conf >= classify_threshold and d.category == "animal"]
        else:
            x, ratio = prepared
            detections = self.detector.detect_prepared(x, ratio, img.size)
            boxes = [d for d in detections if d.conf >= classify_threshold]
        if boxes:
            probs = self.classifier.classify(img, boxes)
            labels = self.classifier.labels
            for d, p in zip(boxes, probs):
                d.scores = {label: round(float(x), 6) for label, x in zip(labels, p)}
        return detections


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None


class Checkpoint:
    """Append-only JSON lines: a header, then one finished record per line."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = path, fingerprint
        self._file = None

    def load(self) -> dict[str, ImageRecord]:
        """Records already done, by absolute path; a torn last line (kill -9) is ignored."""
        if not self.path.is_file():
            return {}
        done: dict[str, ImageRecord] = {}
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        try:
            header = json.loads(lines[0])
        except (ValueError, RecursionError):
            return {}
        if not isinstance(header, dict) or header.get("fingerprint") != self.fingerprint or header.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{self.path}: made with other models or options; run without --resume to start again"
            )
        for line in lines[1:]:
            try:  # a torn last line, or one that is not a record: that image is analysed again
                d = json.loads(line)
                stat = d.pop("_stat", None)
                r = ImageRecord.from_json(d)
            except (ValueError, RecursionError, TypeError, KeyError, AttributeError):
                continue
            if stat is not None and stat == _stat_key(r.path):
                done[str(r.path)] = r
        return done

    def open(self, fresh: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not self.path.is_file():
            with atomic_output(self.path) as tmp:
                tmp.write_text(json.dumps({"version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint}) + "\n")
        else:
            with open(self.path, "rb+") as f:  # drop a torn last line before appending
                data = f.read()
                cut = data.rfind(b"\n") + 1
                f.truncate(cut)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, r: ImageRecord) -> None:
        d = r.to_json()
        d["_stat"] = _stat_key(r.path)
        self._file.write(json.dumps(d) + "\n")
        self._file.flush()  # survives kill -9 (the OS keeps the written bytes)

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def _lower_priority() -> None:
    """Let loading threads yield to inference: ORT's parallel ops wait for their slowest thread,
    so a decoder preempting one of them costs more than it saves (measured on 2 cores: 0.87-0.89
    of detector-only speed at equal priority, 0.90-0.93 with the loaders at nice +10)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # Linux: per thread
    except (AttributeError, OSError):
        pass


def in_order(records: list[ImageRecord], work: Callable, workers: int = 2, ahead: int = 6,
             initializer: Callable | None = None) -> Iterator[tuple]:
    """Yield (record, work(record)) in input order, working on up to `ahead` records in advance."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="patou", initializer=initializer) as pool:
        window: deque = deque()
        it = iter(records)
        for r in it:
            window.append((r, pool.submit(work, r)))
            if len(window) >= ahead:
                break
        while window:
            r, fut = window.popleft()
            nxt = next(it, None)
            if nxt is not None:
                window.append((nxt, pool.submit(work, nxt)))
            yield r, fut.result()


def prefetched(records: list[ImageRecord], load: Callable, workers: int = 2, ahead: int = 6) -> Iterator[tuple]:
    """Yield (record, load(record)) in input order, loading up to `ahead` records in advance."""
    return in_order(records, load, workers, ahead, initializer=_lower_priority)


def process(
    records: list[ImageRecord],
    models: Models,
    classify_threshold: float,
    checkpoint: Checkpoint | None = None,
    on_done: Callable[[ImageRecord], None] = lambda r: None,
) -> None:
    """Run every record through the models, appending each result to the checkpoint in input order.

    With `models.images_at_once` > 1 each worker thread takes whole images (decode, detect,
    classify); otherwise decoding threads run ahead of one image at a time in inference."""
    at_once = getattr(models, "images_at_once", 1)
    if at_once > 1:
        def analysed(r: ImageRecord) -> None:
            loaded = models.load(r)
            if loaded is not None:
                models.analyse_safely(loaded, r, classify_threshold)

        results = in_order(records, analysed, workers=at_once, ahead=2 * at_once)
    else:
        results = ((r, models.analyse_safely(loaded, r, classify_threshold) if loaded is not None else None)
                   for r, loaded in prefetched(records, models.load))
    for r, _ in results:
        if checkpoint:
            checkpoint.append(r)
        on_done(r)
