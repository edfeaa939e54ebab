"""Crop augmentation as batched torch ops (torchvision does not import beside the CPU torch).

Images are (N, 3, H, W) float tensors in 0..255 (uint8 input is converted); every random draw
comes from the torch.Generator passed in, so an epoch's augmentation is reproducible. The
geometric part (random resized crop + small affine) is one matrix per image and a single
`grid_sample`, so a crop is interpolated once. Outside the source the pixels are 0: black,
the pad value of square-pad crops at inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, what Pillow's convert("L") uses


def _u(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype == torch.uint8 else x


def resized_crop_theta(
    n: int, gen: torch.Generator, scale: tuple[float, float] = (0.6, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices: a box of `scale` x the area and `ratio` w/h, placed at
    random inside the square crop. Mild by default: the cached crop is already framed on the box."""
    area = _u(n, *scale, gen)
    r = torch.exp(_u(n, math.log(ratio[0]), math.log(ratio[1]), gen))
    w = torch.sqrt(area * r).clamp(max=1.0)  # half-extents in grid units ([-1, 1] is the crop)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * _u(n, -1, 1, gen)
    cy = (1 - h) * _u(n, -1, 1, gen)
    z = torch.zeros(n)
    return torch.stack([torch.stack([w, z, cx], 1), torch.stack([z, h, cy], 1)], 1)


def affine_theta(
    n: int,
    gen: torch.Generator,
    degrees: float = 10.0,
    translate: float = 0.05,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """(n, 2, 3) matrices for a small rotation, zoom (>1 = larger animal) and shift."""
    a = torch.deg2rad(_u(n, -degrees, degrees, gen))
    s = _u(n, *scale, gen)
    tx, ty = (_u(n, -2 * translate, 2 * translate, gen) for _ in range(2))  # grid spans 2 units
    cos, sin = torch.cos(a) / s, torch.sin(a) / s  # output -> input: rotate back, shrink
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Matrices applying `inner` to output coordinates first, then `outer`."""
    pad = torch.tensor([0.0, 0.0, 1.0]).expand(len(inner), 1, 3)
    return outer @ torch.cat([inner, pad], 1)


def warp(x: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Resample each image through its affine_grid matrix to (size, size); zeros outside."""
    x = _as_float(x)
    grid = F.affine_grid(theta.to(x.dtype), [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def hflip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror a random `p` of the images left-right (animals walk both ways; up-down never)."""
    flip = (torch.rand(len(x), generator=gen) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def random_greyscale(x: torch.Tensor, gen: torch.Generator, p: float = 0.25) -> torch.Tensor:
    """Night infrared frames are grey: teach the head that colour is not the species."""
    x = _as_float(x)
    grey = (x * torch.tensor(GREY).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    pick = (torch.rand(len(x), generator=gen) < p).view(-1, 1, 1, 1)
    return torch.where(pick, grey, x)


def gaussian_blur(
    x: torch.Tensor, gen: torch.Generator, p: float = 0.2, sigma: tuple[float, float] = (0.3, 1.5)
) -> torch.Tensor:
    """Blur a random `p` of the images (motion, dew, distance), each with its own sigma; a
    separable kernel per image applied as one grouped convolution."""
    x = _as_float(x)
    n, c, h, w = x.shape
    blur = torch.rand(n, generator=gen) < p
    s = _u(n, *sigma, gen)
    if not blur.any():
        return x
    radius = math.ceil(3 * sigma[1])
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / s.view(-1, 1)) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = torch.where(blur.view(-1, 1), k, (t == 0).to(x.dtype).view(1, -1))  # identity otherwise
    k = k.repeat_interleave(c, 0)  # (n*c, taps)
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def brightness_contrast(
    x: torch.Tensor, gen: torch.Generator, brightness: float = 0.25, contrast: float = 0.25
) -> torch.Tensor:
    """Scale brightness and contrast by factors in [1 - b, 1 + b] and [1 - c, 1 + c]."""
    x = _as_float(x)
    n = len(x)
    b = _u(n, 1 - brightness, 1 + brightness, gen).view(-1, 1, 1, 1)
    c = _u(n, 1 - contrast, 1 + contrast, gen).view(-1, 1, 1, 1)
    mean = (x * torch.tensor(GREY).view(1, 3, 1, 1)).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    return ((x - mean) * c + mean) * b


def train_transform(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Training view of a batch of square crops: (N, 3, size, size) float in 0..255."""
    n = len(x)
    theta = compose(resized_crop_theta(n, gen), affine_theta(n, gen))
    y = hflip(warp(x, theta, size), gen)
    y = brightness_contrast(y, gen).clamp_(0, 255)
    y = random_greyscale(y, gen)
    return gaussian_blur(y, gen).clamp_(0, 255)


def eval_transform(x: torch.Tensor, size: int) -> torch.Tensor:
    """The whole crop resized to (size, size): what `Classifier` feeds the network at inference
    (antialiased bilinear, as Pillow's resize), with no random crop."""
    x = _as_float(x)
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 255)


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, mean/std in 0..255 units as in the model card."""
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s
