"""SpeciesNet's predictions JSON as boxes (--detections): both of its layouts, hostile entries."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from patou.formats.speciesnet import as_megadetector, read_speciesnet

ELEPHANT = "55631055-3e0e-4b7a-9612-dedebe9f78b0;mammalia;proboscidea;elephantidae;loxodonta;africana;african elephant"
HUMAN = "990ae9dd-7a59-4344-afcb-1b7b21368000;mammalia;primates;hominidae;homo;sapiens;human"
BOVIDAE = "9a8b7c6d-0000-4000-8000-000000000000;mammalia;cetartiodactyla;bovidae;;;bovid family"


def _file(tmp: Path, predictions: list, **info) -> Path:
    p = tmp / "predictions.json"
    p.write_text(json.dumps({"info": {"format_version": "20261015", **info}, "predictions": predictions}))
    return p


def test_the_readme_layout(tmp_path):
    """What `run_model` writes by SpeciesNet's README: image-level prediction, MD boxes."""
    f = _file(tmp_path, [
        {"filepath": "/data/test_data/african_elephants.jpg", "model_version": "4.0.1a",
         "classifications": {"classes": [ELEPHANT], "scores": [0.99]},
         "detections": [{"category": "1", "label": "animal", "conf": 0.93, "bbox": [0.70, 0.47, 0.11, 0.12]},
                        {"category": "1", "label": "animal", "conf": 0.05, "bbox": [0.1, 0.1, 0.1, 0.1]}],
         "prediction": ELEPHANT, "prediction_score": 0.99, "prediction_source": "classifier"},
        {"filepath": "test_data\\human.jpg", "model_version": "4.0.1a",
         "detections": [{"category": "2", "label": "human", "conf": 0.88, "bbox": [0.7, 0.49, 0.06, 0.25]}],
         "prediction": HUMAN, "prediction_score": 0.88, "prediction_source": "detector"},
        {"filepath": "test_data/african_elephants_truncated_file.jpg", "failures": ["DETECTOR", "CLASSIFIER"],
         "model_version": "4.0.1a"},
    ])
    preds, info, digest, problems = read_speciesnet(f)
    assert info["model_versions"] == ["4.0.1a"] and len(digest) == 16 and not problems.lines()
    e = preds["/data/test_data/african_elephants.jpg"]
    assert [d["conf"] for d in e.detections] == [0.93, 0.05]
    assert (e.label, e.taxon, e.score) == ("african elephant", "Loxodonta africana", 0.99)
    h = preds["test_data/human.jpg"]  # backslashes read as folders
    assert h.detections[0]["category"] == "2" and (h.label, h.taxon) == ("human", None)
    assert preds["test_data/african_elephants_truncated_file.jpg"].failure.startswith("SpeciesNet:")
    md = as_megadetector(preds, info)
    assert md["detection_categories"] == {"1": "animal", "2": "human", "3": "vehicle"}
    assert md["info"]["detector"] == "SpeciesNet 4.0.1a"
    assert [im["detections"] is None for im in md["images"]] == [False, False, True]


def test_format_20261015_per_box_classifications(tmp_path):
    f = _file(tmp_path, [
        {"filepath": "a.jpg", "model_version": "5.0.0", "detections": [
            {"category": "1", "label": "animal", "conf": 0.4, "bbox": [0.1, 0.1, 0.2, 0.2],
             "raw_classifications": {"classes": [BOVIDAE], "scores": [0.7]},
             "processed_classification": {"class": BOVIDAE, "score": 0.7, "source": "classifier"}},
            {"category": "1", "label": "animal", "conf": 0.9, "bbox": [0.5, 0.5, 0.2, 0.2],
             "processed_classification": {"class": ELEPHANT, "score": 0.95, "source": "classifier"}}]},
        # a whole-image classifier: its pseudo-box is not a detection, its verdict is the photo's
        {"filepath": "b.jpg", "model_version": "5.0.0b", "detections": [
            {"category": "0", "label": "whole_image_classification", "conf": 1.0, "bbox": [0, 0, 1, 1],
             "processed_classification": {"class": BOVIDAE, "score": 0.6, "source": "classifier"}},
            {"category": "1", "label": "animal", "conf": 0.8, "bbox": [0.2, 0.2, 0.3, 0.3]}]},
    ])
    preds, info, _, problems = read_speciesnet(f)
    assert info["model_versions"] == ["5.0.0", "5.0.0b"]
    assert (preds["a.jpg"].label, preds["a.jpg"].score) == ("african elephant", 0.95)  # the surest box's
    assert (preds["b.jpg"].taxon, preds["b.jpg"].label) == ("Bovidae", "bovid family")
    assert [d["category"] for d in preds["b.jpg"].detections] == ["1"]


def test_hostile_entries_are_left_out_one_line_per_kind(tmp_path):
    box = {"category": "1", "label": "animal", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"predictions": [
        {"filepath": "ok.jpg", "detections": [box,
                                              {**box, "conf": math.nan}, {**box, "conf": 1.5}, {**box, "conf": True},
                                              {**box, "bbox": [0.9, 0.9, 0.5, 0.5]}, {**box, "bbox": [0.1, 0.1, 0, 0.1]},
                                              {**box, "bbox": [0.1, "x", 0.1, 0.1]}, {**box, "category": "7"}, "junk"],
         "prediction": ["not", "text"], "prediction_score": 0.5},
        {"filepath": "../../etc/passwd", "detections": [box]},
        {"filepath": "ok.jpg", "detections": []},
        {"filepath": 12, "detections": []},
        {"filepath": "c.jpg", "failures": "DETECTOR"},
        {"filepath": "d.jpg"},
    ]}, allow_nan=True))
    preds, _, _, problems = read_speciesnet(f)
    assert list(preds) == ["ok.jpg"]
    assert preds["ok.jpg"].detections == [{k: box[k] for k in ("category", "conf", "bbox")}]
    assert preds["ok.jpg"].label is None
    lines = problems.lines()
    assert all(line.count("\n") == 0 for line in lines)
    text = "\n".join(lines)
    assert "boxes dropped (8)" in text
    assert "climbs out of the folder (..), never matched (1)" in text
    assert "already listed" in text and "without a 'filepath'" in text
    assert "'failures' is not a list" in text and "classifier-only run" in text
    assert "labels that are not a text" in text


def test_not_a_predictions_file_is_one_line(tmp_path):
    f = tmp_path / "md.json"
    f.write_text(json.dumps({"images": [], "detection_categories": {}}))
    with pytest.raises(ValueError, match="not a SpeciesNet predictions file"):
        read_speciesnet(f)
    with pytest.raises(ValueError, match="a folder"):
        read_speciesnet(tmp_path)
