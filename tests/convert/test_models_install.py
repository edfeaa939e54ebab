"""`patou models`: install a DeepFaune-layout checkpoint (a tiny ViT the test makes) from a local
HTTP server or --from, convert, check, run it on real photos; and every way an install can fail
leaves nothing installed. No network: the server listens on 127.0.0.1."""
from __future__ import annotations

import hashlib

import csv
import errno
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")

from patou.convert import install as inst  # noqa: E402
from patou.models import registry  # noqa: E402
from patou.models.card import ModelCard  # noqa: E402
from patou.models.classifier import Classifier, crop  # noqa: E402

from checkpoints import make_checkpoint  # noqa: E402

ENTRY = registry.get("deepfaune")
V = "1.4"  # the version whose layout (DINOv2 ViT-L/14) the tiny checkpoints here have; 1.5: test_deepfaune_reference
CLASSES = ENTRY.versions[V].classes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "deepfaune-vit_large_patch14_dinov2.lvd142m.v4.pt")


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "models"
    monkeypatch.setenv(registry.MODELS_ENV, str(d))
    return d


class _Server:
    """Serves one file on 127.0.0.1 with HTTP Range; `cut_after` drops the first response early."""

    def __init__(self, path: Path):
        self.path, self.cut_after, self.ranges = path, None, []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = srv.path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                srv.ranges.append(rng)
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if srv.cut_after is not None:
                    body, srv.cut_after = body[: srv.cut_after], None
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/{path.name}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(checkpoint):
    s = _Server(checkpoint)
    yield s
    s.close()


def _nothing_installed(models_dir: Path) -> None:
    assert registry.installed() == {}
    left = [p.name for p in models_dir.iterdir()] if models_dir.exists() else []
    assert not [n for n in left if n != ".downloads"], left


def test_vit_matches_layout_and_resizes_grid(checkpoint):
    from patou.convert import vit

    sd = torch.load(checkpoint, weights_only=True)["state_dict"]
    model = vit.from_state_dict(sd, prefix="base_model.")
    assert (model.grid, model.patch, len(model.blocks), model.head.out_features) == (37, 14, 2, 38)
    before = model.pos_embed.detach().clone()
    model.resize_grid(182)
    assert model.grid == 13 and model.pos_embed.shape == (1, 1 + 13 * 13, 64)
    assert torch.equal(model.pos_embed[:, 0], before[:, 0])  # the class token's position is not resampled
    logits, feats = model(torch.zeros(2, 3, 182, 182))
    assert logits.shape == (2, 38) and feats.shape == (2, 64)
    # the features are the normed class token the head reads
    assert torch.allclose(model.head(feats), logits, atol=1e-6)


@pytest.mark.slow
def test_install_over_http_then_run_on_real_photos(models_dir, server, real, tmp_path):
    logs = []
    folder = inst.install("deepfaune", V, url=server.url, accept_licence=True, skip_self_check=True, log=logs.append)
    assert folder == models_dir / "deepfaune" and registry.installed() == {"deepfaune": folder}
    assert any("CC BY-SA 4.0" in m for m in logs)  # the licence is shown
    card = ModelCard.load("deepfaune")  # the resolver: a name finds the installed folder
    assert card.path.parent == folder and card.resize == "square-clip" and card.input_size == (182, 182)
    assert card.labels[CLASSES.index("roe deer")] == "roe_deer" and card.labels[CLASSES.index("cow")] == "cattle"
    assert card.extra["groups"]["roe_deer"] == "deer" and card.extra["groups"]["bear"] == "bear"
    assert card.extra["features_output"] == "features" and card.extra["feature_dim"] == 64
    meta = card.extra["install"]
    assert meta["sha256"] == hashlib.sha256(Path(server.path).read_bytes()).hexdigest() and meta["sha256_pinned"] is False
    assert meta["conversion_check"]["top1_agree"] == meta["conversion_check"]["crops"] >= 2
    assert meta["conversion_check"]["max_abs_diff_logits"] < 1e-3
    assert not (models_dir / ".downloads" / server.path.name).exists()  # our 1.2 GB download is cleaned up

    # the ONNX has the second output for few-shot heads (issue 14), and it matches torch on a real crop
    from patou.convert import vit
    from patou.models.runtime import cpu_session

    sess = cpu_session(card.onnx_path)
    assert [o.name for o in sess.get_outputs()] == ["logits", "features"]
    model = vit.from_state_dict(torch.load(server.path, weights_only=True)["state_dict"], "base_model.")
    model.resize_grid(182)
    clf = Classifier("deepfaune", flip=False)
    from PIL import Image

    img = Image.open(sorted(real.rglob("*.jpg"))[0]).convert("RGB")
    x = clf.preprocess([crop(img, [0.3, 0.3, 0.2, 0.4], 182, margin=0.0, mode="square-clip",
                             resample=clf.resample)])
    with torch.no_grad():
        ref_logits, ref_feat = (t.numpy() for t in model(torch.from_numpy(x)))
    logits, feat = sess.run(None, {"input": x})
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
    np.testing.assert_allclose(feat, ref_feat, atol=1e-4)

    # the Camtrap DP table beside the model gives the fine labels their taxa
    rows = {r["label"]: r for r in csv.DictReader(open(folder / "camtrap_dp_taxonomy.csv", encoding="utf-8"))}
    assert rows["roe_deer"]["scientificName"] == "Capreolus capreolus" and rows["bear"]["scientificName"] == "Ursus arctos"
    assert rows["human"]["observationType"] == "human"

    # `patou run --model deepfaune --target bear` on real photos, end to end
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(real.rglob("*.jpg"))[:4]:
        os.symlink(p, photos / p.name)
    out = tmp_path / "out"
    env = {**os.environ, registry.MODELS_ENV: str(models_dir)}
    proc = subprocess.run([sys.executable, "-m", "patou.cli", "run", str(photos), "--out", str(out), "--model", "deepfaune",
                           "--target", "bear", "--quiet", "--threads", "1"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["models"]["classifier"]["name"] == "deepfaune" and run["options"]["model"] == "deepfaune"
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 4
    assert "target_score" in preds[0]  # --target bear is a label of the installed model
    assert any(p["target_score"] for p in preds)
    allowed = set(card.labels) | {"empty", "undefined", "human", "vehicle", "animal"}
    assert {p["label"] for p in preds} <= allowed

    # Camtrap DP export finds the installed model's table through the run (fine label -> taxon)
    from patou.formats.camtrap_dp import load_taxa, run_taxa

    table = run_taxa(run)
    assert table == folder / "camtrap_dp_taxonomy.csv"
    tax = load_taxa(table)  # valid for the exporter: ranks and observation types
    assert set(card.labels) <= set(tax) and tax["red_deer"]["scientificName"] == "Cervus elaphus"
    assert {"empty", "undefined", "human", "vehicle"} <= set(tax)


@pytest.mark.slow
def test_interrupted_download_resumes(models_dir, server):
    server.cut_after = 100_000
    with pytest.raises(inst.InstallError, match="interrupted.*resume"):
        inst.install("deepfaune", V, url=server.url, accept_licence=True, skip_self_check=True, log=lambda m: None)
    part = models_dir / ".downloads" / (server.path.name + ".part")
    assert part.stat().st_size == 100_000
    _nothing_installed(models_dir)
    inst.install("deepfaune", V, url=server.url, accept_licence=True, skip_self_check=True, log=lambda m: None)
    assert server.ranges[-1] == "bytes=100000-"  # the second request asked only for the rest
    card = ModelCard.load("deepfaune")
    assert card.extra["install"]["sha256"] == hashlib.sha256(Path(server.path).read_bytes()).hexdigest()


def test_wrong_pinned_sha256_installs_nothing(models_dir, server):
    with pytest.raises(inst.InstallError, match="SHA-256 .* does not match the pinned"):
        inst.install("deepfaune", V, url=server.url, sha256="0" * 64, accept_licence=True, skip_self_check=True,
                     log=lambda m: None)
    _nothing_installed(models_dir)
    assert not list((models_dir / ".downloads").iterdir())  # the corrupt download is not kept


@pytest.mark.slow
def test_pinned_sha256_accepted(models_dir, checkpoint):
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    inst.install("deepfaune", V, from_file=checkpoint, sha256=digest, accept_licence=True, skip_self_check=True,
                 log=lambda m: None)
    assert ModelCard.load("deepfaune").extra["install"]["sha256_pinned"] is True


def test_truncated_file_installs_nothing(models_dir, checkpoint, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(inst.InstallError, match="truncated.pt: not a readable torch checkpoint"):
        inst.install("deepfaune", V, from_file=bad, accept_licence=True, skip_self_check=True, log=lambda m: None)
    _nothing_installed(models_dir)
    assert bad.is_file()  # the user's file is never touched


@pytest.mark.parametrize("kind", ["unexpected", "classes", "family"])
def test_checkpoint_that_does_not_fit_installs_nothing(models_dir, tmp_path, kind):
    path = tmp_path / "odd.pt"
    version = V
    if kind == "unexpected":
        make_checkpoint(path, extra_key="blocks.0.attn.q_norm.weight")
        match = "unexpected keys base_model.blocks.0.attn.q_norm.weight"
    elif kind == "classes":
        make_checkpoint(path, num_classes=34)
        match = "34 classes, this version of deepfaune has 38"
    else:  # a DINOv2 file offered as v1.5 (DINOv3)
        make_checkpoint(path, num_classes=40)
        version, match = "1.5", "not a DINOv3 ViT checkpoint: missing base_model.reg_token"
    with pytest.raises(inst.InstallError, match=match):
        inst.install("deepfaune", version, from_file=path, accept_licence=True, skip_self_check=True, log=lambda m: None)
    _nothing_installed(models_dir)


def test_another_backbone_name_is_a_warning_the_shapes_decide(models_dir, tmp_path):
    """DeepFaune itself checks only the class count: a file whose args name another backbone but
    whose tensors are this version's network installs, with a warning naming both."""
    path = make_checkpoint(tmp_path / "renamed.pt", backbone="vit_large_patch14_dinov2.lvd142m_ft")
    logs = []
    inst.install("deepfaune", V, from_file=path, accept_licence=True, skip_self_check=True, log=logs.append)
    warned = [m for m in logs if m.startswith("warning:")]
    assert len(warned) == 1 and "'vit_large_patch14_dinov2.lvd142m_ft'" in warned[0]
    assert "'vit_large_patch14_dinov2.lvd142m'" in warned[0] and "shapes decide" in warned[0]
    assert registry.installed().keys() == {"deepfaune"}


@pytest.mark.slow
def test_full_disk_installs_nothing(models_dir, checkpoint, monkeypatch):
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ModelCard, "save", no_space)  # the disk fills up while the card is written
    with pytest.raises(inst.InstallError, match="No space left on device"):
        inst.install("deepfaune", V, from_file=checkpoint, accept_licence=True, skip_self_check=True, log=lambda m: None)
    _nothing_installed(models_dir)


def test_full_disk_during_download(models_dir, server, monkeypatch):
    import builtins

    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return Full(f) if str(file).endswith(".part") else f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(inst.InstallError, match=r"\.part: cannot write the download \(No space left on device\)"):
        inst.install("deepfaune", V, url=server.url, accept_licence=True, skip_self_check=True, log=lambda m: None)
    _nothing_installed(models_dir)


def test_licence_must_be_accepted(models_dir, checkpoint):
    with pytest.raises(inst.InstallError, match="licence of deepfaune 1.4 was not accepted"):
        inst.install("deepfaune", V, from_file=checkpoint, log=lambda m: None)
    asked = []
    with pytest.raises(inst.InstallError, match="not accepted"):
        inst.install("deepfaune", V, from_file=checkpoint, confirm=lambda q: asked.append(q) or False, log=lambda m: None)
    assert asked and "licence" in asked[0]
    _nothing_installed(models_dir)


@pytest.mark.slow
def test_self_check_refuses_random_weights(models_dir, checkpoint):
    """Random weights do not see the demo bear and fox: the install is refused, nothing is left."""
    with pytest.raises(inst.InstallError, match="self-check failed on the demo photos"):
        inst.install("deepfaune", V, from_file=checkpoint, accept_licence=True, log=lambda m: None)
    _nothing_installed(models_dir)


@pytest.mark.slow
def test_cli_from_list_remove(models_dir, tmp_path):
    ckpt = make_checkpoint(tmp_path / "df13.pt", num_classes=34, seed=3)
    env = {**os.environ, registry.MODELS_ENV: str(models_dir)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "patou.cli", "models", *args], capture_output=True, text=True,
                              env=env, stdin=subprocess.DEVNULL)

    p = cli("install", "deepfaune", "--version", "1.3", "--from", str(ckpt))  # no tty, no --accept-licence
    assert p.returncode == 2 and "not accepted" in p.stderr and "Traceback" not in p.stderr
    p = cli("install", "deepfaune", "--version", "1.3", "--from", str(ckpt), "--accept-licence", "--skip-self-check",
            "--int8")
    assert p.returncode == 0, p.stderr
    card = ModelCard.load(models_dir / "deepfaune")
    assert card.version == "1.3" and len(card.labels) == 34 and card.extra["install"]["from_file"] == str(ckpt)
    int8 = "deepfaune-int8" in registry.installed()
    assert int8 == ("also installed as deepfaune-int8" in p.stderr)  # kept only when it agrees
    p = cli("install", "deepfaune", "--version", "1.3", "--from", str(ckpt), "--accept-licence", "--skip-self-check")
    assert p.returncode == 2 and "already installed" in p.stderr  # an earlier install is never overwritten
    p = cli("list")
    assert p.returncode == 0 and "installed" in p.stdout and "installable" in p.stdout
    assert "efficientnet_lite0_imagenet" in p.stdout and "pbil.univ-lyon1.fr" in p.stdout
    p = cli("remove", "deepfaune")
    assert p.returncode == 0 and not (models_dir / "deepfaune").exists()
    p = cli("remove", "deepfaune")
    assert p.returncode == 2 and "not installed" in p.stderr
    p = subprocess.run([sys.executable, "-m", "patou.cli", "run", "--demo", "--out", str(tmp_path / "o"), "--model",
                        "deepfaune", "-q"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "patou models install deepfaune" in p.stderr and "Traceback" not in p.stderr


def test_square_clip_crop_is_deepfaune_crop(real):
    """square-clip: a wide box grows its height to a square, clipped at the image edge; the
    bundled square-pad crop is unchanged (tests/test_classifier.py covers its values)."""
    from PIL import Image

    img = Image.open(sorted(real.rglob("*.jpg"))[0]).convert("RGB")
    W, H = img.size
    box = [0.5, 0.0, 0.4, 0.1]  # wide, touching the top edge
    got = crop(img, box, 182, margin=0.0, mode="square-clip", resample=Image.Resampling.BICUBIC)
    side = 0.4 * W
    cy = 0.05 * H
    want = img.resize((182, 182), Image.Resampling.BICUBIC,
                      box=(0.5 * W, 0.0, min(0.9 * W, W), min(cy + side / 2, H)))
    np.testing.assert_array_equal(got, np.asarray(want))
    pad = crop(img, box, 182, margin=0.0)  # square-pad: the part above the image is black
    assert pad[:20].max() == 0 and got[:20].max() > 0


@pytest.mark.slow
def test_evaluate_at_groups(models_dir, checkpoint, real, tmp_path):
    """Truth labelled with coarse labels (deer) scores a fine-label model with --groups."""
    from patou.evaluate import evaluate_model

    inst.install("deepfaune", V, from_file=checkpoint, accept_licence=True, skip_self_check=True, log=lambda m: None)
    rows = list(csv.DictReader(open(real / "LABELS.csv", encoding="utf-8")))
    tree = tmp_path / "labelled"
    for label in ("bear", "deer", "fox"):
        (tree / label).mkdir(parents=True)
        for r in [r for r in rows if r["label_norm"] == label][:2]:
            os.symlink(real / r["path"], tree / label / Path(r["path"]).name)
    with pytest.raises(ValueError, match="labels the model does not know: deer"):
        evaluate_model(tree, tmp_path / "rep0", "deepfaune", level="image", log=lambda m: None)
    rep = evaluate_model(tree, tmp_path / "rep", "deepfaune", groups=True, level="image", log=lambda m: None)
    card = ModelCard.load("deepfaune")
    assert "deer" in rep["labels"] and "roe_deer" not in rep["labels"] and "bear" in rep["labels"]
    assert set(rep["labels"]) == set(card.extra["groups"].values()) | {"empty"}
    assert rep["image"]["n"] == 6


@pytest.mark.slow
def test_cli_downloads_with_progress(models_dir, server):
    env = {**os.environ, registry.MODELS_ENV: str(models_dir)}
    p = subprocess.run([sys.executable, "-m", "patou.cli", "models", "install", "deepfaune", "--version", V, "--url", server.url,
                        "--accept-licence", "--skip-self-check", "--keep-download"], capture_output=True, text=True,
                       env=env, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "CC BY-SA 4.0" in p.stderr and f"downloading {server.url}" in p.stderr and "installed deepfaune 1.4" in p.stderr
    kept = models_dir / ".downloads" / server.path.name
    assert kept.read_bytes() == server.path.read_bytes()  # --keep-download: the whole file, no .part left
    assert not kept.with_name(kept.name + ".part").exists()
