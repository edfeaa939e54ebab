"""int8 export: the quantized classifier and detector must agree with fp32 on real images."""
from __future__ import annotations

import csv

import numpy as np
import pytest

pytestmark = pytest.mark.slow

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("sklearn")

from patou.media import decode  # noqa: E402
from patou.models.card import ASSETS, ModelCard  # noqa: E402
from patou.models.classifier import DEFAULT_CARD, Classifier, crop  # noqa: E402
from patou.models.detector import Detector  # noqa: E402
from patou.record import ImageRecord  # noqa: E402
from patou.convert import quantize as q  # noqa: E402

INT8_DETECTOR = ASSETS / "megadetectorlite_yolox_tiny_int8.json"
ENA = "zamba-ena24-small/tests/assets/images/ena24_small"
BEARS = [f"{ENA}/8831.jpg", f"{ENA}/8786.jpg", f"{ENA}/9455.jpg",
         "speciesnet-cameratrapai/test_data/american_black_bear.jpg"]


def _load(real, rel):
    return decode(ImageRecord(path=real / rel, root=real))


@pytest.fixture(scope="module")
def crops(real):
    """Real crops as `patou run` makes them (fp32 detector boxes >= 0.2, the card's margin),
    split by image: every third image calibrates (20 crops), the others are held out."""
    with open(real / "LABELS.csv", newline="", encoding="utf-8") as f:
        rels = sorted(r["path"] for r in csv.DictReader(f) if not r["path"].startswith("camtrapR-"))
    det, clf = Detector(threads=2), Classifier(DEFAULT_CARD, threads=2)
    calib, held = [], []
    for i, rel in enumerate(rels):
        img = _load(real, rel)
        if img is None:
            continue
        boxes = [d.bbox for d in det.detect(img) if d.conf >= 0.2]
        (calib if i % 3 == 0 else held).extend(crop(img, b, clf.size, clf.margin, clf.card.pad_value) for b in boxes)
    assert len(calib) >= 20 and len(held) >= 30, (len(calib), len(held))
    return calib[:20], held


@pytest.fixture(scope="module")
def int8_classifier(crops, tmp_path_factory):
    return q.quantize_classifier(DEFAULT_CARD, crops[0], tmp_path_factory.mktemp("int8"))


def test_int8_classifier_agrees_with_fp32_on_held_out_real_crops(crops, int8_classifier):
    card = int8_classifier
    clf = Classifier(card)  # loads like any card; the taxonomy CSV came along
    assert clf.labels == Classifier(DEFAULT_CARD).labels
    report = q.compare(DEFAULT_CARD, card, crops[1])
    assert report["top1_agreement"] >= 0.9, report
    fp32, int8 = Classifier(DEFAULT_CARD).predict(crops[1]), clf.predict(crops[1])
    top2 = np.sort(fp32, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= 0.1  # disagreements may only be near-ties of fp32 itself
    assert (fp32.argmax(1) == int8.argmax(1))[clear].all()
    assert np.abs(fp32[:, 0] - int8[:, 0]).max() < 0.1  # P(bear), the target patou exists for
    assert card.onnx_path.stat().st_size < 0.4 * ModelCard.load(DEFAULT_CARD).onnx_path.stat().st_size


def test_int8_card_records_the_settings_and_keeps_logits_float(int8_classifier):
    card = int8_classifier
    qz = card.extra["quantization"]
    assert card.name == "efficientnet_lite0_imagenet_int8" and card.file == "model.onnx"
    assert qz["weights"] == "int8 per-channel" and qz["format"] == "QDQ" and qz["calibration_inputs"] == 20
    assert qz["weight_bits"] == 7  # no u8 x s8 saturation on CPUs without VNNI
    assert len(qz["float_nodes"]) == q.FLOAT_FIRST and qz["size_mb_int8"] < qz["size_mb_fp32"]
    graph = onnx.load(str(card.onnx_path)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    assert made_by[graph.output[0].name] == "Gemm"  # no QuantizeLinear clipping the logits
    kept = set(qz["float_nodes"])
    int8_convs = {n.name for n in graph.node if n.op_type == "Conv" and made_by.get(n.input[1]) == "DequantizeLinear"}
    assert int8_convs and not (kept & int8_convs)
    assert q.weighted_nodes(card.onnx_path)[: q.FLOAT_FIRST] == qz["float_nodes"]


def test_float_conv_between_int8_layers_is_refused(crops, tmp_path):
    # ORT re-quantizes such a conv per tensor at session load (it wrecked the depthwise convs)
    src = ModelCard.load(DEFAULT_CARD).onnx_path
    x = Classifier(DEFAULT_CARD).preprocess(crops[0][:2])
    middle = lambda pre: [n for n in q.weighted_nodes(pre) if "depthwise" in n][3:5]  # noqa: E731
    with pytest.raises(RuntimeError, match="re-quantizes"):
        q._quantize(src, tmp_path / "m.onnx", list(x), "input", middle, "minmax")


def test_quantize_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        q.quantize_classifier(DEFAULT_CARD, [], tmp_path)
    with pytest.raises(ValueError, match="method"):
        q.quantize_classifier(DEFAULT_CARD, [np.zeros((224, 224, 3), np.uint8)], tmp_path, method="median")


def test_quantize_detector_writes_a_loadable_card(real, tmp_path):
    frames = [_load(real, rel) for rel in BEARS[:2]]
    card = q.quantize_detector(frames, tmp_path, name="det_int8")
    assert (tmp_path / "det_int8.onnx").is_file() and card.task == "detection"
    qz = card.extra["quantization"]
    assert "/head/Concat_6" in qz["float_nodes"] and any("cls_preds" in n for n in qz["float_nodes"])
    report = q.compare_detector(None, card, frames, names=BEARS[:2], runs=2)
    assert report["fp32_detections"] >= 2 and report["kept_by_int8"] == report["fp32_detections"], report


@pytest.mark.skipif(not INT8_DETECTOR.is_file(), reason="int8 detector asset not built (tools/quantize_detector.py)")
def test_int8_detector_asset_finds_the_same_bears(real):
    card = ModelCard.load(INT8_DETECTOR)
    recorded = card.extra["quantization"]["validation"]
    assert recorded["kept_by_int8"] == recorded["fp32_detections"] and recorded["bears"]["kept_by_int8"] >= 4
    images = [_load(real, rel) for rel in BEARS]
    report = q.compare_detector(None, card, images, threshold=0.2, names=BEARS, runs=2)
    assert report["fp32_detections"] >= len(BEARS)
    assert report["kept_by_int8"] == report["fp32_detections"], report["per_image"]
    assert all(p["max_conf_int8"] >= 0.2 for p in report["per_image"])


def test_every_calibration_input_counts(crops, tmp_path):
    # ORT 1.32 with CalibMaxIntermediateOutputs=8 silently kept only the last len % 8 inputs:
    # then 8 real crops + 1 black one calibrate exactly like the black one alone
    black = [np.zeros_like(crops[0][0])]
    a = q.quantize_classifier(DEFAULT_CARD, crops[0][:8] + black, tmp_path / "a")
    b = q.quantize_classifier(DEFAULT_CARD, black, tmp_path / "b")
    assert a.extra["quantization"]["calibration_inputs"] == 9
    assert a.onnx_path.read_bytes() != b.onnx_path.read_bytes()
    q.quantize_classifier(DEFAULT_CARD, crops[0][:8], tmp_path / "c")  # a multiple of 8 used to raise
