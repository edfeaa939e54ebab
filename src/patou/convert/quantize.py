"""Static int8 export with ONNX Runtime, always checked against the fp32 model on real data.

AI-for-Bears lost 17 points of bear recall going int8; the settings below are the ones measured
to lose almost nothing here (tools/quantize_detector.py, tests/convert/test_quantize.py):
- QDQ format, int8 weights **per channel** (per-tensor halved the detector's score SQNR and moved
  confs by up to 0.35), uint8 activations (the x86 U8S8 kernels), MinMax calibration on real
  crops/frames (Percentile once lost a detection, Entropy added boxes; neither beat MinMax).
- The first layers in float: on EfficientNet-Lite0 the 112x112 stem and first blocks cause most
  of the error (int8 logits SQNR 16 dB -> 22 dB, top-1 agreement 91% -> 100% with the first six
  Conv in float) and cost little speed.
- The detector's output layers (the score/box convs, their sigmoids, the concats) in float: the
  box regressions and the scores end in one tensor that must not share one int8 scale.

- Weights in 7 bits (`reduce_range`): x86 CPUs without VNNI (AVX2 only: AMD Zen 1-3, Intel
  before Ice Lake, many field laptops) multiply u8 x s8 pairs with VPMADDUBSW, which saturates at
  int16 when full-range weights meet large activations. With 8-bit weights the same int8 detector
  that matched fp32 on a VNNI machine lost a person box (conf 0.82) and added boxes on blanks on an
  AVX2 EPYC; 7-bit weights cannot saturate (2 x 255 x 64 < 32768), so CPUs with and without VNNI
  compute the same integer products.
- Graph outputs in float (`_float_outputs`): a quantized output clips the logits at the largest
  value seen in calibration.

Only *leading* or *output* nodes are ever kept in float: ORT's session optimiser re-quantizes a
float Conv that sits between DequantizeLinear and QuantizeLinear (per tensor, which ruined the
depthwise convs), so `_check_float` loads every result and refuses such a model.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from patou.models.card import ModelCard
from patou.options import DETECTION_THRESHOLD

FLOAT_FIRST = 6  # leading Conv/Gemm/MatMul kept in float (measured on EfficientNet-Lite0, above)
MAX_CALIBRATION = 300  # calibration inputs used at most (ranges settle long before)
WEIGHTED = ("Conv", "Gemm", "MatMul")
METHODS = ("minmax", "entropy", "percentile")


# ------------------------------------------------------------------------------ plumbing


def _prepare(src: Path, dst: Path) -> None:
    """ORT's recommended pre-pass (shape inference + graph optimisation), so that the quantizer
    sees folded BatchNorms. Plain ONNX shape inference is enough for these CNNs; the symbolic one
    fails on the detector's Shape/Slice head and then leaves a temp model in the working dir."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def weighted_nodes(path: str | Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes in graph (topological) order."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in WEIGHTED]


def _reader(input_name: str, batches: Iterable[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Feed(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: np.ascontiguousarray(x[None], dtype=np.float32)}

    return Feed()


def _quantize(src: Path, dst: Path, inputs: list[np.ndarray], input_name: str, float_nodes, method: str) -> dict:
    """quantize_static with patou's settings; `float_nodes(prepared_path)` names the nodes kept
    in float (names as in the pre-processed graph the quantizer sees). Returns the settings."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    if not inputs:
        raise ValueError("no calibration inputs: static quantization needs real crops or frames")
    step = max(1, -(-len(inputs) // MAX_CALIBRATION))  # evenly spread subset, deterministic
    inputs = inputs[::step]
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        _prepare(src, pre)
        exclude = list(dict.fromkeys(float_nodes(pre)))
        quantize_static(
            str(pre), str(dst), _reader(input_name, inputs),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=calib, nodes_to_exclude=exclude, reduce_range=True,
            # no CalibMaxIntermediateOutputs: ORT 1.32's MinMax calibrator *drops* each flushed
            # chunk instead of merging its ranges (only the last len % N inputs counted, and a
            # multiple of N raised "No data is collected"); MinMax keeps only per-tensor
            # min/max scalars per input, so holding them all costs little memory
        )
    _float_outputs(dst)
    _check_float(dst, exclude)
    import onnxruntime

    return {
        "format": "QDQ", "weights": "int8 per-channel", "weight_bits": 7,  # reduce_range, see above
        "activations": "uint8", "calibration": method,
        "calibration_inputs": len(inputs), "float_nodes": exclude, "onnxruntime": onnxruntime.__version__,
    }


def _float_outputs(path: Path) -> None:
    """Drop the QuantizeLinear/DequantizeLinear pair in front of each graph output: the quantizer
    clips the logits at the largest value seen in calibration, which flattened the top logit of
    held-out crops (fp32 vs int8 probability differences up to 0.6 from 20 calibration crops)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    made_by = {o: n for n in graph.node for o in n.output}
    dropped = []
    for out in graph.output:
        dq = made_by.get(out.name)
        q = made_by.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src, producer = q.input[0], made_by.get(q.input[0])
        if producer is None or any(src in n.input for n in graph.node if n is not q):
            continue  # the float tensor feeds other nodes too: leave it
        producer.output[list(producer.output).index(src)] = out.name
        dropped += [q, dq]
    if dropped:
        for n in dropped:
            graph.node.remove(n)
        used = {i for n in graph.node for i in n.input}
        for init in [i for i in graph.initializer if i.name not in used]:  # their scales
            graph.initializer.remove(init)
        onnx.save(model, str(path))


def _check_float(path: Path, names: Sequence[str]) -> None:
    """Fail if ORT, at session load, turns a node we kept in float back into int8."""
    import onnx
    import onnxruntime as ort

    if not names:
        return
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    bad = [n.name for n in graph.node
           if n.name in set(names) and n.op_type in WEIGHTED and made_by.get(n.input[1]) == "DequantizeLinear"]
    if bad:
        raise RuntimeError(f"{path.name}: ONNX Runtime re-quantizes float nodes {bad}; "
                           "keep a leading or output block in float instead")


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _destination(out_dir: Path, name: str, fp32: ModelCard) -> Path:
    """out_dir/<name>.onnx, refusing the fp32 model's own file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{name}.onnx"
    if dst.resolve() == fp32.onnx_path.resolve():
        raise ValueError(f"{dst}: would overwrite the fp32 model")
    return dst


def _write_card(fp32: ModelCard, onnx_path: Path, quantization: dict) -> ModelCard:
    extra = dict(fp32.extra or {})
    for k in ("onnx_sha256", "verification", "verification_other_sizes"):  # the fp32 file's, not true of this one
        extra.pop(k, None)
    quantization.update(size_mb_fp32=_size_mb(fp32.onnx_path), size_mb_int8=_size_mb(onnx_path),
                        fp32_onnx_sha256=_sha256(fp32.onnx_path))
    extra["quantization"] = quantization
    extra["onnx_sha256"] = _sha256(onnx_path)
    card = replace(fp32, name=f"{fp32.name}_int8", file=onnx_path.name, extra=extra, path=None,
                   description=f"{fp32.description} Quantized to int8 (static, ONNX Runtime QDQ, per-channel weights) "
                               "by patou.convert.quantize; extra.quantization has the settings and the check.".strip())
    card.save(onnx_path.with_suffix(".json"))
    return ModelCard.load(onnx_path.with_suffix(".json"))


def latency_ms(runs_of: dict, runs: int = 50, block: int = 5) -> dict[str, float]:
    """Median wall time (ms) of one call per named (session, feed). Models take turns in blocks
    of `block` calls (the first of each block not timed: it reloads the caches the other model
    evicted), so that load from other processes hits fp32 and int8 alike. Reports only: never
    assert on it."""
    times: dict[str, list[float]] = {k: [] for k in runs_of}
    for _ in range(max(1, -(-runs // block))):
        for k, (session, feed) in runs_of.items():
            session.run(None, feed)
            for _ in range(block):
                t = time.perf_counter()
                session.run(None, feed)
                times[k].append(time.perf_counter() - t)
    return {k: round(float(np.median(v)) * 1e3, 3) for k, v in times.items()}


def _size_and_speed(models: dict, x: np.ndarray, runs: int) -> dict:
    """File size and single-input latency of the fp32 and int8 models (anything with .session
    and .card), and the speed ratio."""
    ms = latency_ms({k: (m.session, {m.session.get_inputs()[0].name: x}) for k, m in models.items()}, runs)
    out = {}
    for k, m in models.items():
        out[f"size_mb_{k}"] = _size_mb(m.card.onnx_path)
        out[f"latency_ms_{k}"] = ms[k]
    out["speedup"] = round(out["latency_ms_fp32"] / out["latency_ms_int8"], 2)
    return out


# ------------------------------------------------------------------------------ classifier


def quantize_classifier(
    model_dir: Path,
    calibration_crops: list[np.ndarray],
    out_dir: Path,
    *,
    exclude_first_last: bool = False,
    float_first: int = FLOAT_FIRST,
    method: str = "minmax",
    name: str = "model",
) -> ModelCard:
    """int8 copy of a classification card: `out_dir/<name>.onnx` + `<name>.json`.

    `calibration_crops` are (size, size, 3) uint8 crops, preprocessed exactly as `Classifier`
    does. `float_first` leading Conv/Gemm/MatMul stay float; `exclude_first_last` also keeps the
    first and the last of them (the head: +3.8 MB for EfficientNet-Lite0's 1000-way Gemm).
    Files the card names (taxonomy CSV) are copied along.
    """
    from patou.models.classifier import Classifier

    clf = Classifier(model_dir, threads=2, flip=False)
    fp32 = clf.card
    out_dir = Path(out_dir)
    dst = _destination(out_dir, name, fp32)

    rollup_head = (fp32.extra or {}).get("init") == "rollup"

    def float_nodes(pre: Path) -> list[str]:
        nodes = weighted_nodes(pre)
        keep = nodes[: max(0, int(float_first))] + ([nodes[0], nodes[-1]] if exclude_first_last and nodes else [])
        if rollup_head:  # log-softmax over 1000 classes and -1e4 masks: no int8 range fits them
            import onnx

            keep += [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith("/head/")]
        return keep

    inputs = [clf.preprocess([c])[0] for c in calibration_crops]
    settings = _quantize(fp32.onnx_path, dst, inputs, clf.session.get_inputs()[0].name, float_nodes, method)
    taxonomy = (fp32.extra or {}).get("taxonomy")
    if taxonomy and (out_dir / taxonomy).resolve() != (fp32.path.parent / taxonomy).resolve():
        shutil.copy2(fp32.path.parent / taxonomy, out_dir / taxonomy)
    return _write_card(fp32, dst, settings)


def compare(
    fp32_dir: Path | ModelCard,
    int8_dir: Path | ModelCard,
    crops: list[np.ndarray],
    y_true: Sequence[str] | None = None,
    target: str | None = None,
    threshold: float = 0.5,
    runs: int = 100,
) -> dict:
    """fp32 vs int8 on held-out crops (never the calibration ones): top-1 agreement, accuracy
    and target recall at `threshold` when `y_true` is given, size, single-crop latency (1 crop,
    2 threads, no flip; median of `runs`) and the speed ratio. Predictions use `Classifier` as
    `patou run` does (flip on, taxonomy roll-up)."""
    from sklearn.metrics import accuracy_score

    from patou.models.classifier import Classifier

    out: dict = {"crops": len(crops)}
    models = {"fp32": Classifier(fp32_dir, threads=2), "int8": Classifier(int8_dir, threads=2)}
    proba = {k: m.predict(crops) for k, m in models.items()}
    labels = models["fp32"].labels
    top = {k: np.asarray(labels)[p.argmax(1)] for k, p in proba.items()}
    out["top1_agreement"] = round(float(np.mean(top["fp32"] == top["int8"])), 4)
    out["max_abs_proba_diff"] = round(float(np.abs(proba["fp32"] - proba["int8"]).max()), 4) if len(crops) else 0.0
    if y_true is not None:
        y = np.asarray(list(y_true))
        for k in models:
            out[f"accuracy_{k}"] = round(float(accuracy_score(y, top[k])), 4)
        if target is not None:
            t, pos = labels.index(target), y == target
            out["target"], out["target_support"], out["threshold"] = target, int(pos.sum()), threshold
            for k in models:
                hit = proba[k][pos, t] >= threshold
                out[f"target_recall_{k}"] = round(float(hit.mean()), 4) if pos.any() else None
    out.update(_size_and_speed(models, models["fp32"].preprocess(crops[:1]), runs))
    return out


# ------------------------------------------------------------------------------ detector


def detector_output_nodes(path: str | Path) -> list[str]:
    """The YOLOX head's output layers: the *_preds convs, the score sigmoids after them and the
    shape plumbing that concatenates boxes and scores into the raw output."""
    import onnx

    graph = onnx.load(str(path)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    preds = {n.name for n in graph.node if n.op_type == "Conv" and "_preds" in n.name}
    tail = set(preds)
    for n in graph.node:
        src = made_by.get(n.input[0]) if n.input else None
        if n.op_type == "Sigmoid" and src is not None and src.name in preds:
            tail.add(n.name)
        if n.name.startswith("/head/") and n.op_type in ("Concat", "Reshape", "Transpose", "Slice", "Shape"):
            tail.add(n.name)
    return [n.name for n in graph.node if n.name in tail]


def quantize_detector(
    calibration_images: list[Image.Image],
    out_path_dir: Path,
    *,
    card: ModelCard | Path | None = None,
    name: str = "megadetectorlite_yolox_tiny_int8",
    float_head: bool = True,
    float_first: int = 0,
    method: str = "minmax",
) -> ModelCard:
    """int8 copy of a detection card (default: the bundled MegadetectorLite), calibrated on
    real frames letterboxed exactly as `Detector` does. Writes `<name>.onnx` + `<name>.json`."""
    from patou.models.detector import Detector

    det = Detector(card, threads=2)
    fp32 = det.card
    dst = _destination(Path(out_path_dir), name, fp32)

    def float_nodes(pre: Path) -> list[str]:
        return weighted_nodes(pre)[: max(0, int(float_first))] + (detector_output_nodes(pre) if float_head else [])

    inputs = [det.preprocess(im.convert("RGB"))[0] for im in calibration_images]
    settings = _quantize(fp32.onnx_path, dst, inputs, det.session.get_inputs()[0].name, float_nodes, method)
    return _write_card(fp32, dst, settings)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two normalised [x, y, w, h] boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union > 0 else 0.0


def compare_detector(
    fp32_card: ModelCard | Path | None,
    int8_card: ModelCard | Path,
    images: list[Image.Image],
    threshold: float = DETECTION_THRESHOLD,
    names: Sequence[str] | None = None,
    runs: int = 20,
) -> dict:
    """int8 detections against fp32 ones as the reference, image by image: a fp32 box >=
    `threshold` is kept when an int8 box >= `threshold` overlaps it at IoU >= 0.5 (one-to-one,
    greedy by conf). Also extra int8 boxes, conf differences of matched pairs, network latency
    (1 frame, 2 threads) and the speed ratio."""
    from patou.models.detector import Detector

    dets = {"fp32": Detector(fp32_card, threads=2), "int8": Detector(int8_card, threads=2)}
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    per_image, diffs = [], []
    for name, im in zip(names, images):
        x, ratio = dets["fp32"].preprocess(im)
        found = {k: [d for d in d_.detect_prepared(x, ratio, im.size) if d.conf >= threshold] for k, d_ in dets.items()}
        free, kept = list(found["int8"]), 0
        for d in found["fp32"]:
            best = max(free, key=lambda e: _iou(d.bbox, e.bbox), default=None)
            if best is not None and _iou(d.bbox, best.bbox) >= 0.5:
                free.remove(best)
                kept += 1
                diffs.append(best.conf - d.conf)
        per_image.append({"image": name, "fp32": len(found["fp32"]), "kept": kept, "extra_int8": len(free),
                          "max_conf_fp32": max((d.conf for d in found["fp32"]), default=0.0),
                          "max_conf_int8": max((d.conf for d in found["int8"]), default=0.0)})
    ref = sum(p["fp32"] for p in per_image)
    kept = sum(p["kept"] for p in per_image)
    out = {
        "images": len(images), "threshold": threshold, "fp32_detections": ref, "kept_by_int8": kept,
        "recall_vs_fp32": round(kept / ref, 4) if ref else None,
        "recall_change_points": round(100 * (kept / ref - 1), 2) if ref else None,
        "extra_int8_detections": sum(p["extra_int8"] for p in per_image),
        "images_losing_a_detection": [p["image"] for p in per_image if p["kept"] < p["fp32"]],
        "conf_diff_mean": round(float(np.mean(diffs)), 4) if diffs else None,
        "conf_diff_max_abs": round(float(np.max(np.abs(diffs))), 4) if diffs else None,
        "per_image": per_image,
    }
    if images:
        out.update(_size_and_speed(dets, dets["fp32"].preprocess(images[0])[0][None], runs))
    return out


def card_figures(card: ModelCard, figures: dict) -> ModelCard:
    """Record comparison figures in the int8 card (`extra.quantization.validation`), per-image
    detail left out."""
    extra = dict(card.extra or {})
    q = dict(extra.get("quantization") or {})
    q["validation"] = json.loads(json.dumps({k: v for k, v in figures.items() if k != "per_image"}))
    extra["quantization"] = q
    card.extra = extra
    card.save(card.path)
    return card
