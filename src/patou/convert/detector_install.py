"""Install a publisher's YOLO detector (models/detector_registry.py) as patou's `.onnx` + card.

The same steps as a classifier install (models/install.py: licence accepted, resumable download or
`--from`, SHA-256 recorded, everything built in a hidden temp folder renamed into place at the end),
with this converter: the checkpoint is read by the inert unpickler and built in plain torch from its
own yaml (convert/yolo.py), checked against the entry (family, number of levels, the classes
animal/person/vehicle in that order, MegaDetector's own metadata where the file has it), exported to
ONNX with free height and width and the box decoding inside, then ONNX is checked against torch on the
bundled demo photos letterboxed the publisher's way (raw predictions and final boxes), and the
self-check asks for an animal on the demo bear and fox at the publisher's typical threshold.
`--int8` adds NAME-int8 (7-bit weights, the head in float), kept only if it keeps the fp32 boxes.
"""
from __future__ import annotations

import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from patou import __version__
from patou.models import registry, yolo_boxes
from patou.models.card import ModelCard
from patou.models.detector_registry import DetectorEntry
from patou.convert.fetch import InstallError, Log, Progress, building, fetch

SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # the bundled demo photos
SELF_CHECK_ANIMALS = ("ena24-8831-black-bear.jpg", "ena24-4383-grey-fox.jpg")
RAW_TOLERANCE = 1e-3  # max |onnx - torch| on the raw predictions, relative to their largest value


def demo_photos(folders=()) -> list[tuple[str, object]]:
    """The bundled demo photos (and those of `folders`), decoded as `patou run` decodes them."""
    from patou.media import decode
    from patou.record import ImageRecord

    paths = sorted(SAMPLES.glob("*.jpg"))
    for folder in folders:
        paths += sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = []
    for p in paths:
        img = decode(ImageRecord(path=p, root=p.parent), side=2048)
        if img is not None:
            out.append((str(p), img))
    return out


def card_for(entry: DetectorEntry, onnx_name: str, strides: list[float], source: str) -> ModelCard:
    """The card of an installed YOLO detector: how the publisher letterboxes, decodes and maps
    boxes back, and what MegaDetector's tools want to read about it."""
    return ModelCard(
        name=entry.name, task="detection", file=onnx_name, input_size=(entry.input_size, entry.input_size),
        labels=list(entry.classes), mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), resize="letterbox-yolo",
        pad_value=114, licence=entry.licence, source=source, description=entry.description,
        version=entry.megadetector_version or "1",
        extra={
            "head": entry.family, "architecture": entry.architecture, "strides": [int(s) for s in strides],
            "letterbox_stride": int(max(strides)), "nms_iou": entry.nms_iou, "max_detections": 300,
            "box_mapping": entry.box_mapping, "round_pixels": entry.round_pixels,
            "typical_detection_threshold": entry.typical_threshold,
            "conservative_detection_threshold": entry.conservative_threshold,
            "threshold_source": entry.threshold_source,
            "megadetector_version": entry.megadetector_version,
            "md_detector_file": entry.file,  # what MD's own files name as info.detector
            "outputs": ("boxes: (N, anchors, 4 + 1 + 3) [cx, cy, w, h] in input pixels, objectness, class scores"
                        if entry.family == "yolov5" else
                        "boxes: (N, anchors, 4 + 3) [cx, cy, w, h] in input pixels, class scores"),
            "relative_ap": entry.relative_ap, "gflops": entry.gflops,
        },
    )


def check_entry(entry: DetectorEntry, y, path: Path) -> None:
    if y.family != entry.family:
        raise InstallError(f"{path}: a {y.family} checkpoint, {entry.name} is {entry.family} ({entry.architecture})")
    if len(y.strides) != entry.levels:
        raise InstallError(f"{path}: {len(y.strides)} detection levels, {entry.name} ({entry.architecture}) has {entry.levels}")
    if tuple(y.names) != entry.classes:
        raise InstallError(f"{path}: classes {y.names}, {entry.name} has {list(entry.classes)}")
    size = y.info.get("image_size")
    if size is not None and size != entry.input_size:
        raise InstallError(f"{path}: MegaDetector's metadata says image size {size}, {entry.name} runs at {entry.input_size}")
    version = y.info.get("model_version_string")
    if version is not None and entry.megadetector_version and version != entry.megadetector_version:
        raise InstallError(f"{path}: MegaDetector's metadata says {version}, not {entry.megadetector_version}")


def check_against_torch(net, card: ModelCard, photos) -> dict:
    """Same letterboxed demo photos through torch and ONNX: raw predictions within RAW_TOLERANCE,
    the same final boxes."""
    import torch

    from patou.models.detector import Detector

    det = Detector(card, threads=None, min_conf=card.extra["conservative_detection_threshold"])
    worst, same, boxes = 0.0, 0, 0
    for _, img in photos:
        x, g = det.preprocess(img)
        with torch.no_grad():
            ref = net(torch.from_numpy(x[None]))[0].numpy()  # preprocess has scaled it to 0..1
        got = det.session.run([det._output], {det._input: x[None]})[0][0]
        worst = max(worst, float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-6)))
        a, b = ([(d.category, d.conf, d.bbox) for d in det.postprocess(o, g, img.size)] for o in (ref, got))
        verdict = yolo_boxes.agree(a, b, det.nms_iou)
        same += not verdict["unexplained"]
        boxes += verdict["reference"]
    check = {"photos": len(photos), "max_relative_diff_raw": float(f"{worst:.3g}"), "same_boxes": same,
             "boxes": boxes, "tolerance": RAW_TOLERANCE}
    if worst > RAW_TOLERANCE or same != len(photos):
        raise InstallError(f"ONNX does not match torch on the demo photos (raw relative difference {worst:.1e}, "
                           f"same boxes on {same}/{len(photos)})")
    return check


def self_check(card: ModelCard, photos) -> dict:
    from patou.models.detector import Detector

    thr = card.extra["typical_detection_threshold"]
    det = Detector(card, threads=None, min_conf=thr)
    found = {}
    for path, img in photos:
        name = Path(path).name
        if name in SELF_CHECK_ANIMALS:
            best = max((d.conf for d in det.detect(img) if d.category == "animal"), default=0.0)
            found[name] = round(best, 4)
    missing = [n for n in SELF_CHECK_ANIMALS if found.get(n, 0.0) < thr]
    if missing:
        raise InstallError(f"self-check failed: no animal box >= {thr} on the demo photo(s) {', '.join(missing)} "
                           "(the weights do not behave like the published detector; --skip-self-check only for a "
                           "model you vouch for)")
    return {"best_animal_conf": found, "threshold": thr}


def quantize(card: ModelCard, folder: Path, name: str, calibration, held_out, log: Log) -> ModelCard | None:
    """int8 twin (static QDQ, per-channel 7-bit weights, as the bundled detector's), the Detect
    layer and its box decoding in float; kept only if every fp32 box >= the typical threshold on
    the held-out photos has its int8 box (IoU >= 0.5) and int8 adds none."""
    import onnx

    from patou.convert.quantize import card_figures, compare_detector, quantize_detector

    layers = [int(m.group(1)) for n in onnx.load(str(card.onnx_path)).graph.node
              if (m := re.match(r"/model\.(\d+)/", n.name))]
    if not layers:
        raise InstallError(f"{card.onnx_path.name}: no /model.N/ nodes to tell the head by")
    # the head (the last layer, Detect): box regressions and scores must not share int8 scales
    q = quantize_detector([img for _, img in calibration], folder, card=card, name=name,
                          head_prefix=f"/model.{max(layers)}/")
    q.name = name
    q.save(q.path)
    fig = compare_detector(card, q, [img for _, img in held_out], card.extra["typical_detection_threshold"],
                           names=[Path(p).name for p, _ in held_out], runs=3)
    fig["calibration_photos"] = [Path(p).name for p, _ in calibration]
    q = card_figures(q, fig)
    kept = fig["kept_by_int8"] == fig["fp32_detections"] and fig["extra_int8_detections"] == 0
    log(f"int8: {fig['kept_by_int8']}/{fig['fp32_detections']} fp32 boxes kept on {len(held_out)} photos, "
        f"{fig['extra_int8_detections']} extra; {fig.get('latency_ms_fp32')} ms fp32, {fig.get('latency_ms_int8')} ms int8")
    return q if kept else None


def install_detector(entry: DetectorEntry, *, from_file=None, accept_licence=False, confirm=None,
                     skip_self_check=False, int8=False, check_dirs=(), url=None, sha256=None, keep_download=False,
                     progress: Progress | None = None, log: Log = print) -> Path:
    name = entry.name
    licence = (f"{name}: licence {entry.licence}\n  cite: {entry.citation}\n  source: {entry.url}")
    got = fetch(name, entry.megadetector_version or "1", licence, url or entry.url, sha256 or entry.sha256,
                entry.size_mb, from_file=from_file, accept_licence=accept_licence, confirm=confirm,
                mirror=url is not None, progress=progress, log=log, md5=entry.md5)
    root = registry.models_dir()
    dest, dest_int8 = root / name, root / f"{name}-int8"
    if int8 and dest_int8.exists():
        raise InstallError(f"{name}-int8 is already installed; `patou models remove {name}-int8` first")
    with building(root, name) as (tmp, tmp_int8):
        t0 = time.perf_counter()
        log(f"reading {got.path.name} (no code from the file runs) and building {entry.architecture} from its yaml")
        from patou.convert import yolo

        try:
            y = yolo.read(got.path)
        except ValueError as e:
            raise InstallError(str(e)) from None
        check_entry(entry, y, got.path)
        card = card_for(entry, f"{name}.onnx", y.strides, got.url)
        yolo.export_onnx(y.net, tmp / card.file, size=(entry.input_size, entry.input_size))
        card.save(tmp / f"{name}.json")
        t_export = time.perf_counter() - t0
        photos = demo_photos()
        conversion = check_against_torch(y.net, card, photos)
        conversion["export_s"] = round(t_export, 1)
        log(f"ONNX matches torch on {conversion['photos']} demo photos (raw relative difference "
            f"{conversion['max_relative_diff_raw']:.1e}, same boxes)")
        card.extra["install"] = {
            "registry": name, "url": got.url, "from_file": str(got.path) if from_file else None, "sha256": got.sha256,
            "sha256_pinned": bool(got.pinned), "md5_published": entry.md5, "md5_matches_publisher": got.md5_matches_publisher,
            "citation": entry.citation, "homepage": entry.homepage, "checkpoint": {
                "family": y.family, "architecture": y.architecture, "model_class": y.model_class,
                "parameters": y.parameters, "megadetector_info": y.info},
            "conversion_check": conversion, "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "patou_version": __version__,
        }
        del y
        if skip_self_check:
            log("self-check skipped (--skip-self-check)")
            card.extra["install"]["self_check"] = "skipped"
        else:
            card.extra["install"]["self_check"] = self_check(card, photos)
            log("self-check passed: animals found on the demo bear and fox")
        card.save(tmp / f"{name}.json")
        keep_int8 = None
        if int8:
            shutil.rmtree(tmp_int8, ignore_errors=True)
            tmp_int8.mkdir()
            extra = demo_photos(check_dirs)[len(photos):]
            calibration, held_out = (photos, extra) if extra else (photos, photos)
            keep_int8 = quantize(ModelCard.load(tmp / f"{name}.json"), tmp_int8, f"{name}-int8", calibration, held_out, log)
            if keep_int8 is None:
                log(f"int8 does not keep the fp32 boxes: {name}-int8 not installed")
        if keep_int8 is not None:
            tmp_int8.rename(dest_int8)  # the only steps that make models visible, and they are renames
            log(f"also installed {name}-int8 in {dest_int8}")
        tmp.rename(dest)
    if got.downloaded is not None and not keep_download:
        got.downloaded.unlink(missing_ok=True)
    log(f"installed {name} in {dest}")
    return dest
