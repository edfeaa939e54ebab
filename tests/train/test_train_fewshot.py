"""Few-shot training (issue 14): a roll-up start equals the default, heads on cached features,
an installed ONNX model as backbone. Real crops from ../shared/data/camtrap-real."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[train]')")
pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch not installed")
onnx = pytest.importorskip("onnx", reason="onnx not installed")

from PIL import Image, ImageOps  # noqa: E402

from patou.models.card import ModelCard  # noqa: E402
from patou.models.classifier import Classifier, crop  # noqa: E402
from patou.train.backbones import build  # noqa: E402
from patou.train.crops import read_crop, view_fraction  # noqa: E402
from patou.train.export import export_model  # noqa: E402
from patou.train.features import FeatureCache, OnnxFeatures, TorchFeatures  # noqa: E402
from patou.train.headfit import fit_head, predict_features  # noqa: E402
from patou.train.job import CROP_MARGIN  # noqa: E402
from patou.train.records import CROP_SIZE, Crop  # noqa: E402
from patou.train.rollup import label_weights, make_head, resolve_init  # noqa: E402

Z = "zamba-ena24-small/tests/assets/images/ena24_small/"
S = "speciesnet-cameratrapai/test_data/"
A = "animl-py-southwest/examples/Southwest/"
BOXES = [  # (path, box drawn by eye, label)
    (Z + "8831.jpg", (0.354, 0.483, 0.211, 0.203), "bear"),
    (Z + "9455.jpg", (0.229, 0.358, 0.077, 0.117), "bear"),
    (Z + "8786.jpg", (0.318, 0.58, 0.077, 0.16), "bear"),
    (S + "american_black_bear.jpg", (0.4375, 0.425, 0.319, 0.325), "bear"),
    (Z + "2999.jpg", (0.638, 0.467, 0.331, 0.283), "other"),
    (Z + "352.jpg", (0.319, 0.442, 0.146, 0.158), "other"),
    (Z + "4383.jpg", (0.1, 0.425, 0.3, 0.275), "other"),
    (Z + "6039.jpg", (0.0, 0.208, 0.456, 0.683), "other"),
    (S + "domestic_dog.jpg", (0.2375, 0.1, 0.519, 0.617), "other"),
    (A + "2021-06-30_SYFR0218_cougar.JPG", (0.54, 0.37, 0.241, 0.255), "other"),
    (A + "IMAG0107_deer.JPG", (0.3, 0.3, 0.4, 0.4), "deer"),
]
SIZE = 224


@pytest.fixture(scope="module")
def images(real):
    return [(ImageOps.exif_transpose(Image.open(real / p)).convert("RGB"), box, lab) for p, box, lab in BOXES]


@pytest.fixture(scope="module")
def crops(images, tmp_path_factory):
    """Crops as the crop cache cuts them (margin 0.1, CROP_SIZE px JPEG)."""
    root = tmp_path_factory.mktemp("crops")
    out = []
    for i, (img, box, lab) in enumerate(images):
        path = root / f"{i}.jpg"
        Image.fromarray(crop(img, box, CROP_SIZE, margin=CROP_MARGIN)).save(path, quality=95)
        out.append(Crop(path=path, label=lab, source=path, bbox=box))
    return out


def _rollup_model(labels, tmp_path, verify):
    model, spec = build("efficientnet-lite0", len(labels), SIZE, seed=0)
    model.head = make_head("rollup", labels, spec.n_features, 0.2, seed=0)
    card = export_model(model, labels, spec, tmp_path, {"crop_margin": 0.0}, verify)
    return Classifier(card.path)


@pytest.mark.parametrize("labels", [["bear", "other"], ["bear", "deer", "fox", "other"]])
@pytest.mark.slow
def test_rollup_start_reproduces_the_default_on_real_photos(images, labels, tmp_path):
    """Before any training the roll-up head is the default: same margin, flip averaging,
    temperature and object prior, through the exported ONNX and `Classifier.classify`."""
    default = Classifier()
    new = _rollup_model(labels, tmp_path, [crop(im, b, SIZE, margin=0.0) for im, b, _ in images[:4]])
    assert new.margin == default.margin == 0.0 and new.flip and default.flip
    for img, box, _ in images:
        p_def = default.classify(img, [box])[0]
        p_new = new.classify(img, [box])[0]
        ref = [p_def[default.labels.index(lab)] for lab in labels if lab != "other"]
        ref.append(1.0 - sum(ref))  # other = everything the training labels do not name
        np.testing.assert_allclose(p_new, ref, atol=1e-4)
    # and not trivially flat: the clear bear is a bear, the dog is not
    assert new.classify(images[0][0], [images[0][1]])[0][0] > 0.5
    assert new.classify(images[8][0], [images[8][1]])[0][0] < 0.1


def test_labels_without_imagenet_counterpart_start_fresh_and_merge_renames():
    c = label_weights(["bear", "rodent", "other"])
    assert c[:, 0].any() and not c[:, 1].any() and c[:, 2].any()
    assert (c > 0).sum(1).max() == 1  # an ImageNet class feeds one label at most
    # every ImageNet class lands somewhere when "other" catches the rest
    assert (c > 0).sum() == c.shape[0]
    merged = label_weights(["canid", "other"], merge={"wolf": "canid", "fox": "canid", "dog": "canid"})
    assert (merged[:, 0] > 0).sum() == 6 + 4 + 120
    assert resolve_init(None, "efficientnet-lite0", ["bear", "other"]) == "rollup"
    assert resolve_init(None, "mobilenetv2", ["bear", "other"]) == "random"
    assert resolve_init(None, "efficientnet-lite0", ["rodent", "macropod"]) == "random"
    with pytest.raises(ValueError, match="roll-up"):
        resolve_init("rollup", "mobilenetv2", ["bear", "other"])


def test_view_fraction_is_the_crop_at_a_smaller_margin(images, crops):
    img, box, _ = images[0]
    v = view_fraction(0.0, CROP_MARGIN)
    inner = read_crop(crops[0].path, v)
    assert inner.shape == (round(CROP_SIZE * v),) * 2 + (3,)
    direct = crop(img, box, inner.shape[0], margin=0.0).astype(float)
    assert np.abs(inner.astype(float) - direct).mean() < 6  # JPEG + resampling, not another picture
    other = crop(img, box, inner.shape[0], margin=0.3).astype(float)
    assert np.abs(inner.astype(float) - other).mean() > 2 * np.abs(inner.astype(float) - direct).mean()


@pytest.mark.slow
def test_head_from_the_cache_equals_head_from_the_photos(crops, tmp_path):
    labels = ["bear", "other"]
    two = [c for c in crops if c.label in labels]
    y = [labels.index(c.label) for c in two]
    model, spec = build("efficientnet-lite0", 2, 128, seed=0)
    view = view_fraction(0.0, CROP_MARGIN)

    def head():
        return make_head("rollup", labels, spec.n_features, 0.2, seed=0)

    live = TorchFeatures(model, spec, view)
    cache = FeatureCache(tmp_path / "features", live)
    first = cache.features(two)
    assert cache.counts == {"cached": 0, "computed": len(two)}
    again = cache.features(two)
    assert cache.counts == {"cached": len(two), "computed": 0}
    photos = live(two)  # no cache: the backbone on the crop files
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(photos, first, atol=1e-5)
    assert np.abs(first[:, 0] - first[:, 1]).max() > 1e-3  # the mirror is another view

    kw = dict(epochs=8, seed=1, balance_ratio=5.0)
    h_cache, h_photos = head(), head()
    fit_head(h_cache, again, y, **kw)
    fit_head(h_photos, photos, y, **kw)
    for (k, a), b in zip(h_cache.state_dict().items(), h_photos.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=k)
    assert h_cache.correction.weight.abs().max() > 0  # it did learn something
    p = predict_features(h_cache, first)
    assert p.shape == (len(two), 2) and np.allclose(p.sum(1), 1, atol=1e-5)


class TwoOutputs(torch.nn.Module):
    """A tiny classifier honouring the installed-model contract: logits + 'features'."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        f = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(f), f


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny"
    folder.mkdir()
    torch.onnx.export(TwoOutputs().eval(), torch.zeros(1, 3, 64, 64), str(folder / "model.onnx"), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits", "features"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})
    ModelCard(name="tiny", task="classification", file="model.onnx", input_size=(64, 64),
              labels=[f"c{i}" for i in range(5)], mean=(127.0,) * 3, std=(128.0,) * 3, resize="square-pad",
              extra={"features_output": "features", "feature_dim": 8}).save(folder / "model.json")
    return folder


def test_installed_onnx_backbone_gives_features_and_a_composed_model(installed, crops, tmp_path, monkeypatch):
    from patou.train.compose import export_composed
    from patou.train.features import find_backbone_card

    monkeypatch.setenv("PATOU_MODELS", str(installed.parent))
    card = find_backbone_card("tiny")
    assert card is not None and card.name == "tiny"
    assert find_backbone_card("efficientnet-lite0") is None
    feats = OnnxFeatures(card)(crops)
    assert feats.shape == (len(crops), 2, 8) and np.isfinite(feats).all()
    labels = ["bear", "other"]
    two = [i for i, c in enumerate(crops) if c.label in labels]
    y = [labels.index(crops[i].label) for i in two]
    head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    fit_head(head, feats[two], y, epochs=20, seed=0)
    arrays = [read_crop(crops[i].path) for i in two]
    out = export_composed(card, head, labels, tmp_path / "m", {"crop_margin": CROP_MARGIN}, arrays)
    assert out.labels == labels and out.extra["features_output"] == "features" and out.extra["feature_dim"] == 8
    clf = Classifier(out.path)
    got = clf.predict(arrays)  # flip-averaged, through the one composed ONNX
    np.testing.assert_allclose(got, predict_features(head, feats[two]), atol=1e-4)
    # the composed model honours the contract too: it can serve as a backbone in turn
    assert OnnxFeatures(ModelCard.load(out.path))(crops[:2]).shape == (2, 2, 8)


def test_card_without_features_is_refused_with_a_clear_message(installed, tmp_path):
    folder = tmp_path / "nofeat"
    folder.mkdir()
    (folder / "model.onnx").write_bytes((installed / "model.onnx").read_bytes())
    data = json.loads((installed / "model.json").read_text())
    data["extra"] = {}
    (folder / "model.json").write_text(json.dumps(data))
    from patou.train.features import find_backbone_card

    with pytest.raises(ValueError, match="features_output"):
        find_backbone_card(folder)


@pytest.fixture(scope="module")
def lite0_features(crops):
    """bear/other crops, their cached-style features at the roll-up's margin, and the roll-up base."""
    from patou.train import convex

    labels = ["bear", "other"]
    two = [c for c in crops if c.label in labels]
    model, spec = build("efficientnet-lite0", 2, SIZE, seed=0)
    feats = TorchFeatures(model, spec, view_fraction(0.0, CROP_MARGIN))(two)
    head = make_head("rollup", labels, spec.n_features, 0.2, seed=0)
    with torch.no_grad():
        base = torch.stack([head.base(torch.from_numpy(feats[:, v])) for v in range(2)], 1).double().numpy()
    y = np.array([labels.index(c.label) for c in two])
    return two, feats, base, y, convex


@pytest.mark.slow
def test_convex_correction_shrinks_to_the_default_and_folds_into_the_head(lite0_features):
    """An infinite penalty is the default (to 1e-4); a fitted correction, folded into the
    head's raw-feature Linear, predicts what the fit predicts, and does fit the crops."""
    two, feats, base, y, convex = lite0_features
    default = convex.predict(base, feats, None)
    head = make_head("rollup", ["bear", "other"], feats.shape[2], 0.2, seed=0)
    np.testing.assert_allclose(predict_features(head, feats), default, atol=1e-5)  # the untrained head
    fitted = convex._path(base, feats, y, [("linear", 1e9), ("bias", 1e9)])
    for c in fitted:
        np.testing.assert_allclose(convex.predict(base, feats, fitted[c]), default, atol=1e-4)
    groups = list(range(len(y)))  # one photo per crop
    res = convex.fit_rollup_convex(head, feats, y, groups, penalties=(1e-2,), kinds=("linear",))
    assert res["choice"]["method"] == "convex" and res["choice"]["cv_folds"] == 5
    ref = convex._path(base, feats, y, [("linear", 1e-2)])[("linear", 1e-2)]
    if res["choice"]["correction"] == "linear":
        np.testing.assert_allclose(predict_features(head, feats), convex.predict(base, feats, ref), atol=1e-4)
    fit = convex.predict(base, feats, ref)
    assert convex.balanced_log_loss(fit, y) < convex.balanced_log_loss(default, y) - 0.05


@pytest.mark.slow
def test_convex_cv_never_predicts_a_crop_with_a_model_that_saw_it(lite0_features):
    """Out-of-fold predictions of a fold do not change when that fold's labels do: the choice is
    made on held-out groups only. Groups are never cut across folds."""
    two, feats, base, y, convex = lite0_features
    groups = [0, 0, 1, 2, 3, 3, 4, 5, 6, 7]  # two photos share an event twice
    splits = convex.group_folds(y, groups, 3, seed=0)
    assert sorted(np.concatenate(splits).tolist()) == list(range(len(y)))
    for s in splits:
        assert not {groups[i] for i in s} & {groups[i] for i in range(len(y)) if i not in s}
    kw = dict(penalties=(1.0, 1e-2), splits=splits)
    a = convex.choose(base, feats, y, groups, **kw)
    y2 = y.copy()
    y2[splits[0]] = 1 - y2[splits[0]]  # the held-out fold's labels flipped
    b = convex.choose(base, feats, y2, groups, **kw)
    others = np.setdiff1d(np.arange(len(y)), splits[0])
    moved = 0.0
    for c in a["oof"]:
        np.testing.assert_allclose(a["oof"][c][splits[0]], b["oof"][c][splits[0]], atol=1e-9)
        moved = max(moved, float(np.abs(a["oof"][c][others] - b["oof"][c][others]).max()))
    assert moved > 1e-3  # ... while the folds that trained on them did change
    assert a["choice"] in a["cv"] and ("default", float("inf")) in a["cv"]


@pytest.mark.slow
def test_convex_head_from_the_cache_equals_head_from_the_photos(lite0_features, tmp_path):
    from patou.train import convex

    two, _, _, y, _ = lite0_features
    model, spec = build("efficientnet-lite0", 2, SIZE, seed=0)
    live = TorchFeatures(model, spec, view_fraction(0.0, CROP_MARGIN))
    cache = FeatureCache(tmp_path / "features", live)
    cache.features(two)
    cached, photos = cache.features(two), live(two)
    assert cache.counts["cached"] == len(two)
    heads = []
    for f in (cached, photos):
        h = make_head("rollup", ["bear", "other"], spec.n_features, 0.2, seed=0)
        heads.append((convex.fit_rollup_convex(h, f, y, list(range(len(y))), penalties=(1.0, 1e-2))["choice"], h))
    assert heads[0][0]["correction"] == heads[1][0]["correction"] and heads[0][0]["penalty"] == heads[1][0]["penalty"]
    np.testing.assert_allclose(predict_features(heads[0][1], cached), predict_features(heads[1][1], cached), atol=1e-4)



@pytest.mark.slow
def test_convex_without_evidence_penalises_by_the_effective_number_of_crops(lite0_features):
    """Every bear in one group: no CV, the linear correction at 1 / (effective crops), which the
    balanced weights make ~ classes x the rarest count, not the number of crops."""
    two, feats, base, y, convex = lite0_features
    one = ["siteA" if v == y[0] else f"site{i}" for i, v in enumerate(y)]  # y[0]'s class in one group
    res = convex.choose(base, feats, y, one, penalties=(1.0,))
    assert res["folds"] == 0 and res["choice"] == ("linear", pytest.approx(1 / convex.effective_crops(y)))
    assert convex.effective_crops(np.array([0] * 5 + [1] * 5)) == pytest.approx(10)  # balanced: every crop
    assert convex.effective_crops(np.array([0] + [1] * 550)) == pytest.approx(4 / (1 + 1 / 550))  # one bear: ~4
    assert convex.choose(base, feats, y, list(range(len(y))), penalties=(1.0,))["folds"] >= 2  # evidence: CV
