"""Stream records through decode -> boxes -> classify, with decoding overlapped and a checkpoint.

`Analyser` is the per-image work: decode at the size the detector needs, the boxes of the image's
box source (the bundled detector, a MegaDetector file, the whole image: patou/boxes), the
classifier on every box above the detection threshold.

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
from typing import Callable, Iterator, NamedTuple

from . import __version__
from .atomic import atomic_output
from .boxes import BoxSource, DetectorBoxes, bundled_detector
from .decide import decide_direct
from .digest import file_sha256
from .media import DECODE_SIDE, decode
from .models.classifier import Classifier
from .options import RunOptions
from .record import Detection, ImageRecord
from .video import VideoSampling, is_video, read_frames

CHECKPOINT_VERSION = 1


class Prepared(NamedTuple):
    """What a decoding thread made of one photo or frame for its box source."""

    source: BoxSource
    data: object


class Analyser:
    """One image at a time through its box source and the classifier: the persistent ONNX Runtime
    sessions of a run (created once, reused for every image) and what each image needs of them."""

    def __init__(self, model: str | Path | None = None, threads: int | None = None, flip: bool = True,
                 fast: bool = False, video: VideoSampling | None = None, boxes: BoxSource | None = None,
                 detector_size: str | int | None = None, max_pixels: int | None = None,
                 images_at_once: int | None = 1, detector: str | None = None):
        """`threads`: CPU threads in all (default: every core). `images_at_once`: images `process`
        analyses side by side, each session call then on threads // images_at_once threads; None:
        one image per thread. One image at a time with every thread is the shortest wait for one
        photo (the guard); one per thread is the most photos per second (a batch run): single-thread
        calls never wait for a parallel op's slowest thread, and one image's decoding overlaps the
        other's inference with nothing to schedule (measured: benchmarks/throughput.py).
        `boxes`: where the boxes come from instead of the detector, for the files it covers
        (a MegaDetector file, --no-detector; see patou/boxes). `detector`: an installed detector's
        name (`--detector mdv5a`) instead of the bundled one."""
        self.max_pixels = max_pixels  # decode cap (media.MAX_PIXELS when None)
        total = threads or os.cpu_count() or 1
        self.images_at_once = max(1, min(int(images_at_once or total), total))
        if self.images_at_once > 1:
            threads = max(1, total // self.images_at_once)
        self.detector = bundled_detector(fast, threads, detector_size, detector)
        self.detector_boxes = DetectorBoxes(self.detector)
        # decode at least as large as the detector input (a 1280 input fed from 1024 px gains nothing)
        self.decode_side = max(DECODE_SIDE, self.detector.input_size[0], self.detector.input_size[1])
        self.classifier = Classifier(model, threads=threads, flip=flip)
        self.video = video or VideoSampling()
        self.boxes = boxes

    @classmethod
    def for_run(cls, options: RunOptions, boxes: BoxSource | None = None) -> "Analyser":
        """The analyser `patou run` uses with these options (Ray workers: one image at a time each)."""
        return cls(options.model, threads=options.threads, flip=options.flip, fast=options.fast,
                   video=VideoSampling(options.video_fps, options.video_frames), boxes=boxes,
                   detector_size=options.detector_size, max_pixels=options.max_pixels,
                   images_at_once=options.images_at_once if options.engine != "ray" else 1,
                   detector=options.detector)

    def fingerprint(self, detection_threshold: float) -> str:
        """What per-image results depend on: a checkpoint made with other models is not reused."""
        parts = [__version__, str(detection_threshold), str(self.classifier.flip)]
        if self.video != VideoSampling():  # default sampling keeps the fingerprints of photo-only runs
            parts.append(self.video.key())
        if self.boxes is not None:
            parts.append(self.boxes.key)
        if self.max_pixels is not None:  # a photo refused under one cap may decode under another
            parts.append(f"max_pixels:{self.max_pixels}")
        if self.detector.input_size != tuple(self.detector.card.input_size) or hasattr(self.detector, "passes"):
            parts.append(f"detector_size:{[d.input_size for d in getattr(self.detector, 'passes', [self.detector])]}")
        for card in (self.detector.card, self.classifier.card):
            parts += [card.name, card.version, file_sha256(card.onnx_path)[:16], json.dumps(card.extra, sort_keys=True)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def detector_summary(self) -> dict:
        """The detector the boxes came from, as megadetector.json names it."""
        bundled = self.detector.card.summary()
        return bundled if self.boxes is None else self.boxes.detector_summary(bundled)

    def source_for(self, record: ImageRecord) -> BoxSource:
        return self.boxes if self.boxes is not None and self.boxes.covers(record) else self.detector_boxes

    def load(self, record: ImageRecord):
        """Decode and prepare for the box source: the work that runs in the decoding threads.

        A photo gives (image, prepared); a video a list of (frame_number, image, prepared)."""
        if record.failure:  # already failed before decoding (e.g. a MegaDetector failure entry)
            return None
        source = self.source_for(record)
        if is_video(record.path):
            frames = read_frames(record, self.video)
            return [(n, img, Prepared(source, source.prepare(record, img))) for n, img in frames] or None
        img = decode(record, self.decode_side, max_pixels=self.max_pixels)
        return (img, Prepared(source, source.prepare(record, img))) if img is not None else None

    def analyse(self, loaded, record: ImageRecord, detection_threshold: float) -> None:
        """Find the boxes, then classify every box the verdict may use (conf >= detection_threshold)."""
        if isinstance(loaded, list):  # a video: every sampled frame, boxes tagged with their frame
            record.detections = []
            for n, img, prepared in loaded:
                for d in self._analyse_frame(img, prepared, detection_threshold):
                    d.frame_number = n
                    record.detections.append(d)
            return
        record.detections = self._analyse_frame(*loaded, detection_threshold)

    def analyse_safely(self, loaded, record: ImageRecord, detection_threshold: float) -> None:
        """analyse(), where a model error costs this file (a `failure`), not the run or the guard."""
        try:
            self.analyse(loaded, record, detection_threshold)
        except Exception as e:
            record.detections, record.failure = [], f"model error: {type(e).__name__}: {e}"

    def _analyse_frame(self, img, prepared: Prepared, detection_threshold: float) -> list[Detection]:
        detections = prepared.source.find(prepared.data, img)
        boxes = []
        for d in detections:
            if not prepared.source.classifies(d):  # a file's person/vehicle: decided; other categories kept
                decide_direct(d, self.classifier.labels)
            elif d.conf >= detection_threshold:
                boxes.append(d)
        if boxes:
            probs = self.classifier.classify(img, boxes)
            labels = self.classifier.labels
            for d, p in zip(boxes, probs):
                # 6 significant digits, not 6 decimals: a small probability keeps its size, which a
                # mean over logits (decide.py, the card's event rule) reads from its log
                d.scores = {label: float(f"{float(x):.6g}") for label, x in zip(labels, p)}
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
    analyser: Analyser,
    detection_threshold: float,
    checkpoint: Checkpoint | None = None,
    on_done: Callable[[ImageRecord], None] = lambda r: None,
) -> None:
    """Run every record through the analyser, appending each result to the checkpoint in input order.

    With `analyser.images_at_once` > 1 each worker thread takes whole images (decode, detect,
    classify); otherwise decoding threads run ahead of one image at a time in inference."""
    at_once = getattr(analyser, "images_at_once", 1)
    if at_once > 1:
        def analysed(r: ImageRecord) -> None:
            loaded = analyser.load(r)
            if loaded is not None:
                analyser.analyse_safely(loaded, r, detection_threshold)

        results = in_order(records, analysed, workers=at_once, ahead=2 * at_once)
    else:
        results = ((r, analyser.analyse_safely(loaded, r, detection_threshold) if loaded is not None else None)
                   for r, loaded in prefetched(records, analyser.load))
    for r, _ in results:
        if checkpoint:
            checkpoint.append(r)
        on_done(r)
