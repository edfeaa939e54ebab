"""Install a registry model (registry.py) as patou's `.onnx` + card, for offline use.

One path for every entry: fetch (resumable HTTP download into a `.part` file, or `--from FILE`),
SHA-256 (checked when pinned, recorded always), licence accepted, convert to ONNX, check ONNX
against torch on real crops, self-check on the bundled demo photos, optionally int8. Everything
is built in a hidden temp folder beside the destination and renamed into place at the very end,
so a failure at any step leaves nothing half-installed. torch is only imported here and only
for the conversion; the installed model runs on ONNX Runtime like the bundled ones.
"""
from __future__ import annotations

import csv
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from patou import __version__
from patou.options import DETECTION_THRESHOLD
from patou.models import registry
from patou.models.card import ModelCard
from patou.models.registry import Entry, Version
from patou.record import ImageRecord
# the steps every install shares (download, licence, checksums, stale temp folders): fetch.py
from patou.convert.fetch import (  # noqa: F401  (re-exported: install.download, install.InstallError...)
    CHUNK, Fetched, InstallError, Log, Progress, building, clean_stale_installs, download, fetch,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# the self-check: each demo photo's best animal crop must come out in this group
SELF_CHECK = {"ena24-8831-black-bear.jpg": "bear", "ena24-4383-grey-fox.jpg": "fox"}
ONNX_TOLERANCE = 1e-3  # max |onnx - torch| on logits, relative to the logits' scale


# ---------------------------------------------------------------- checkpoint -> torch
PREFIX = "base_model."  # the publisher's module around the timm network (DeepFaune's classifTools.Model)


def _family(version: Version):
    from patou.convert import eva, vit

    families = {"dinov2": vit, "dinov3": eva}  # registry `network["family"]` -> patou's network for it
    return families[version.network.get("family", "dinov2")]


def load_checkpoint(path: Path, entry: Entry, version: Version, log: Log = print):
    """The checkpoint as a torch network, mapped strictly; InstallError naming the file otherwise.

    Read by torch's safe loader, else by the inert unpickler when only its `args` hold what torch
    will not read (convert/checkpoint.py); the network its shapes declare checked against the
    registry's before any weight is read; `args` must agree on the class count, while another
    backbone name is only a warning (DeepFaune itself checks only the class count)."""
    from patou.convert import checkpoint

    family, n = _family(version), len(version.classes)
    limits = {**{k: v for k, v in version.network.items() if k != "family"}, "classes": n}
    try:
        with checkpoint.read(path, "--from") as ck:
            if ck.refused:
                log(f"--from {path}: torch's safe loader refuses {', '.join(ck.refused[:6])} in it: read "
                    "with patou's inert unpickler instead (values only; nothing from the file runs)")
            backbone, classes = ck.args.get("backbone"), ck.args.get("num_classes")
            if not (classes is None or type(classes) is int and classes == n):
                kind = "" if type(classes) is int else f" (a {type(classes).__name__})"
                raise InstallError(f"--from {path}: {str(classes)[:20]} classes{kind}, this version of {entry.name} has {n}")
            if backbone is not None and backbone != version.backbone:
                log(f"warning: --from {path}: its args name the backbone {str(backbone)[:80]!r}, not "
                    f"{version.backbone!r}; the tensors' shapes decide")
            try:
                checkpoint.check_limits(family.architecture(checkpoint.strip_prefix(ck.shapes(), PREFIX), PREFIX), limits)
                state = ck.tensors()  # only now are weights read
            except ValueError as e:
                raise InstallError(f"--from {path}: {e}") from None
    except InstallError:
        raise
    except ValueError as e:  # convert/checkpoint.py's one line, naming the file
        raise InstallError(str(e)) from None
    try:
        model = family.from_state_dict(state, prefix=PREFIX, limits=limits)
        model.set_input_size(version.input_size)
    except ValueError as e:
        raise InstallError(f"--from {path}: {e}") from None
    return model


def export_onnx(model, size: int, path: Path) -> None:
    import warnings

    import torch

    x = torch.zeros(1, 3, size, size)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # dynamo=False: the legacy exporter's graph is plain ops that ORT and its quantiser know
            torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits", "features"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})
    except OSError as e:
        raise InstallError(f"{path}: cannot write the ONNX model ({e.strerror or e})") from None


# ---------------------------------------------------------------- checks
def demo_crops(size: int, mode: str, resample: str, folders: list[Path] = ()) -> dict[str, list[np.ndarray]]:
    """Crops of the best animal box of each demo photo (and of every animal box in `folders`)."""
    from patou.media import decode
    from patou.models.classifier import RESAMPLERS, crop
    from patou.models.detector import Detector

    det = Detector(threads=None)
    out: dict[str, list[np.ndarray]] = {}
    paths = [SAMPLES / n for n in SELF_CHECK]
    for folder in folders:
        paths += sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for p in paths:
        img = decode(ImageRecord(path=p, root=p.parent))
        if img is None:
            continue
        boxes = [d for d in det.detect(img) if d.category == "animal" and d.conf >= DETECTION_THRESHOLD]
        if p.parent == SAMPLES:
            boxes = boxes[:1]
        if boxes:
            out[str(p)] = [crop(img, d.bbox, size, margin=0.0, mode=mode, resample=RESAMPLERS[resample]) for d in boxes]
    return out


def _input(crops: list[np.ndarray], mean, std) -> np.ndarray:
    x = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)
    return (x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)


def check_against_torch(model, onnx_path: Path, x: np.ndarray) -> dict:
    import torch

    from patou.models.runtime import cpu_session

    with torch.no_grad():
        ref, ref_feat = (t.numpy() for t in model(torch.from_numpy(x)))
    got, got_feat = cpu_session(onnx_path).run(["logits", "features"], {"input": x})
    diff = float(np.abs(got - ref).max())
    scale = 1.0 + float(np.abs(ref).max())
    check = {"crops": int(len(x)), "max_abs_diff_logits": round(diff, 7),
             "max_abs_diff_features": round(float(np.abs(got_feat - ref_feat).max()), 7),
             "top1_agree": int((got.argmax(1) == ref.argmax(1)).sum()), "tolerance": ONNX_TOLERANCE * scale}
    if diff > ONNX_TOLERANCE * scale or check["top1_agree"] != len(x):
        raise InstallError(f"ONNX does not match torch on the demo crops (max |diff| {diff:.2e}, "
                           f"top-1 agrees on {check['top1_agree']}/{len(x)})")
    return check


def self_check(card: ModelCard, crops: dict[str, list[np.ndarray]], groups: dict[str, str]) -> dict:
    from patou.models.classifier import Classifier

    clf = Classifier(card, threads=None, flip=False)
    results = {}
    for name, want in SELF_CHECK.items():
        key = str(SAMPLES / name)
        if key not in crops:
            raise InstallError(f"self-check: the bundled detector found no animal in {name}")
        p = clf.predict(crops[key][:1])[0]
        label = clf.labels[int(p.argmax())]
        results[name] = {"expected": want, "label": label, "group": groups.get(label, label), "score": round(float(p.max()), 4)}
    wrong = [f"{n}: {r['label']} ({r['score']:.2f}), expected {r['expected']}" for n, r in results.items()
             if r["group"] != r["expected"]]
    if wrong:
        raise InstallError("self-check failed on the demo photos (" + "; ".join(wrong) + "): the weights do not "
                           "behave like the published model; --skip-self-check only for a model you vouch for")
    return results


def quantize_int8(src: Path, dst: Path, x: np.ndarray) -> dict:
    """Dynamic int8 (per-channel weights, 7-bit range: u8 x s8 products cannot saturate on CPUs
    without VNNI, see quantize.py); the figures of its agreement with fp32 on `x`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from patou.models.runtime import cpu_session

    quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
    ref = cpu_session(src).run(["logits"], {"input": x})[0]
    got = cpu_session(dst).run(["logits"], {"input": x})[0]
    return {"crops": int(len(x)), "top1_agree": int((ref.argmax(1) == got.argmax(1)).sum()),
            "size_mb": round(dst.stat().st_size / 2**20, 1)}


# ---------------------------------------------------------------- install
def _class_files(entry: Entry, version: Version, folder: Path) -> tuple[list[str], dict[str, str]]:
    """Labels (patou's fine names, in output order), label -> group, and the Camtrap DP table
    written into the model folder (the version's classes plus patou's non-animal rows)."""
    from patou.formats.camtrap_dp import TAXA

    tax = registry.read_class_table(entry.class_table)
    unknown = [c for c in version.classes if c not in tax]
    if unknown:
        raise InstallError(f"{entry.class_table}: no row for {', '.join(unknown)}")
    labels = [tax[c].label for c in version.classes]
    groups = {tax[c].label: tax[c].group for c in version.classes}
    with open(TAXA, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames)
        base = [r for r in reader if r["observationType"] != "animal" or r["label"] == "other"]
    with open(folder / "camtrap_dp_taxonomy.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        for c in version.classes:
            w.writerow({**tax[c].row, "label": tax[c].label})
        w.writerows(base)
    return labels, groups


def licence_text(entry: Entry, version_name: str, version: Version) -> str:
    return (f"{entry.name} {version_name}: licence {version.licence}\n"
            f"  cite: {entry.citation}\n  source: {version.url}")


def install(
    name: str,
    version: str | None = None,
    *,
    from_file: str | Path | None = None,
    accept_licence: bool = False,
    confirm: Callable[[str], bool] | None = None,
    skip_self_check: bool = False,
    int8: bool = False,
    check_dirs: list[Path] = (),
    url: str | None = None,
    sha256: str | None = None,
    keep_download: bool = False,
    progress: Progress | None = None,
    log: Log = print,
) -> Path:
    """Install registry model `name` into models_dir()/name; returns the folder. `url` and
    `sha256` override the entry's (a mirror; tests serve from 127.0.0.1)."""
    from patou.models.detector_registry import detector_entry

    try:
        det = detector_entry(name, version)
    except ValueError as e:
        raise InstallError(str(e)) from None
    if det is not None:  # MegaDetector, DeepFaune's YOLOv8s...: another converter, the same steps
        from patou.convert.detector_install import install_detector

        return install_detector(det, from_file=from_file, accept_licence=accept_licence, confirm=confirm,
                                skip_self_check=skip_self_check, int8=int8, check_dirs=check_dirs, url=url,
                                sha256=sha256, keep_download=keep_download, progress=progress, log=log)
    entry = registry.get(name)
    vname, ver = entry.version(version)
    root = registry.models_dir()
    dest = root / name
    got = fetch(
        name, vname, licence_text(entry, vname, ver), url or ver.url, sha256 or ver.sha256, ver.size_mb,
        from_file=from_file, accept_licence=accept_licence, confirm=confirm, mirror=url is not None,
        progress=progress, log=log)
    path, digest, downloaded, pinned, src_url = got.path, got.sha256, got.downloaded, got.pinned, got.url

    with building(root, name) as (tmp, tmp_int8):
        t0 = time.perf_counter()
        log("converting to ONNX")
        model = load_checkpoint(path, entry, ver, log)
        onnx_path = tmp / f"{name}.onnx"
        export_onnx(model, ver.input_size, onnx_path)
        t_export = time.perf_counter() - t0
        crops = demo_crops(ver.input_size, entry.resize, entry.resample, list(check_dirs))
        all_crops = [c for cs in crops.values() for c in cs]
        x = _input(all_crops, entry.mean, entry.std)
        conversion = check_against_torch(model, onnx_path, x)
        conversion["export_s"] = round(t_export, 1)
        log(f"ONNX matches torch on {conversion['crops']} crops (max |diff| {conversion['max_abs_diff_logits']:.1e})")
        labels, groups = _class_files(entry, ver, tmp)
        dim = int(model.head.in_features)
        del model
        card = ModelCard(
            name=name, task=entry.task, file=onnx_path.name, input_size=(ver.input_size, ver.input_size),
            labels=labels, mean=entry.mean, std=entry.std, resize=entry.resize, licence=ver.licence,
            source=src_url, description=ver.description, version=vname,
            extra={
                "outputs": "logits", "crop_margin": 0.0, "resample": entry.resample,
                # the publisher's decision rule: temperatures, event average, mirror (classifier.py, decide.py)
                **ver.decision, "mirror": entry.mirror,
                "groups": groups, "source_classes": list(ver.classes),
                "camtrap_dp_taxonomy": "camtrap_dp_taxonomy.csv",
                # the pre-head embedding (normed class token), for few-shot heads trained on it
                "features_output": "features", "feature_dim": dim,
                "install": {
                    "registry": name, "version": vname, "url": src_url, "from_file": str(path) if from_file else None,
                    "sha256": digest, "sha256_pinned": bool(pinned), "citation": entry.citation,
                    "homepage": entry.homepage, "conversion_check": conversion,
                    **({"reference_check": ver.reference} if ver.reference else {}),
                    "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "patou_version": __version__,
                },
            },
        )
        card.save(tmp / f"{name}.json")
        if skip_self_check:
            log("self-check skipped (--skip-self-check)")
            card.extra["install"]["self_check"] = "skipped"
        else:
            card.extra["install"]["self_check"] = self_check(card, crops, groups)
            log("self-check passed: the demo bear and fox are recognised")
        card.save(tmp / f"{name}.json")
        int8_card = None
        if int8:
            shutil.rmtree(tmp_int8, ignore_errors=True)
            tmp_int8.mkdir()
            q = quantize_int8(onnx_path, tmp_int8 / f"{name}-int8.onnx", x)
            if q["top1_agree"] == q["crops"]:
                shutil.copy2(tmp / "camtrap_dp_taxonomy.csv", tmp_int8)
                int8_card = ModelCard(**{**{k: getattr(card, k) for k in card.__dataclass_fields__ if k != "path"},
                                        "name": f"{name}-int8", "file": f"{name}-int8.onnx",
                                        "extra": {**card.extra, "quantization": {"method": "dynamic int8, per-channel", **q}}})
                int8_card.save(tmp_int8 / f"{name}-int8.json")
                log(f"int8 agrees with fp32 on {q['crops']} crops: also installed as {name}-int8 ({q['size_mb']} MB)")
            else:
                log(f"warning: int8 disagrees with fp32 on {q['crops'] - q['top1_agree']} of {q['crops']} crops: not kept")
        # the only step that makes the model visible, and it is a rename
        if int8_card is not None:
            if (root / f"{name}-int8").exists():
                raise InstallError(f"{name}-int8 is already installed; `patou models remove {name}-int8` first")
            tmp_int8.rename(root / f"{name}-int8")
        tmp.rename(dest)
    if downloaded is not None and not keep_download:
        downloaded.unlink(missing_ok=True)  # ours, and 1.2 GB: the card keeps its SHA-256
    log(f"installed {name} {vname} in {dest}")
    return dest


def remove(name: str) -> Path:
    """Delete an installed model's folder (only a folder patou installed: it must hold a card)."""
    folder = registry.installed().get(name)
    if folder is None:
        raise InstallError(f"{name} is not installed in {registry.models_dir()}")
    shutil.rmtree(folder)
    return folder


def describe_installed() -> list[dict]:
    rows = []
    for name, folder in registry.installed().items():
        try:
            card = ModelCard.load(folder)
        except ValueError as e:
            rows.append({"name": name, "folder": str(folder), "problem": str(e)})
            continue
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        rows.append({"name": name, "task": card.task, "version": card.version, "classes": len(card.labels),
                     "size_mb": round(size / 2**20, 1), "licence": card.licence, "source": card.source,
                     "folder": str(folder)})
    return rows
