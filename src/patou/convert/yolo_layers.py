"""The building blocks YOLOv5 and Ultralytics YOLOv8/v11 networks are made of, in plain torch.

Written from reading the two architectures (Jocher et al.; the YOLOv5 and Ultralytics repositories),
not copied: module and attribute names follow the publishers' state-dict keys (`cv1.conv.weight`,
`m.0.cv2.bn.running_mean`...), so a checkpoint maps onto them strictly, without renaming. Both
families share Conv (conv, BN, activation), Bottleneck, C3 and SPPF; YOLOv8 adds C2f, YOLOv11 adds
C3k2/C3k and C2PSA (position-sensitive attention). The heads live in yolov5.py and
ultralytics_yolo.py.

What a layer's yaml row does not say is taken from the checkpoint's own module tree
(`apply_details`): each Conv's activation (a checkpoint may hold SiLU, Identity or LeakyReLU where
the default would be SiLU) and each BatchNorm's eps, so the network computes what the file describes.
"""
from __future__ import annotations

import ast
import math

import torch
from torch import nn

from patou.convert import unpickle


def autopad(k, p=None, d: int = 1):
    """'same' padding for an odd kernel (the publishers' rule), a kernel int or (h, w) pair."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def make_divisible(x: float, divisor: int = 8) -> int:
    """Channels rounded up to a multiple of `divisor` (how both families apply width multiples)."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation (SiLU unless the checkpoint says otherwise)."""

    def __init__(self, c1: int, c2: int, k=1, s: int = 1, p=None, g: int = 1, d: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DWConv(Conv):
    """Depth-wise Conv: groups = gcd(in, out)."""

    def __init__(self, c1: int, c2: int, k=1, s: int = 1, d: int = 1, act: bool = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Focus(nn.Module):
    """Space-to-depth stem of YOLOv5 before v6 (2x2 pixels -> 4x channels), then a Conv."""

    def __init__(self, c1: int, c2: int, k=1, s: int = 1, p=None, g: int = 1, act: bool = True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x):
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Bottleneck(nn.Module):
    """cv1 then cv2, plus the input when `shortcut` and the widths agree."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k=(3, 3), e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convs: bottlenecks on one half-width branch, concat, fuse."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, k=(1, 3)):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, k=k, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k(C3):
    """YOLOv11's C3 with k x k convs in both bottleneck layers."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, k: int = 3):
        super().__init__(c1, c2, n, shortcut, g, e, k=(k, k))


class SPP(nn.Module):
    """Spatial pyramid pooling: the input and its 5/9/13 stride-1 max-pools, concatenated."""

    def __init__(self, c1: int, c2: int, k=(5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """SPP with one k x k pool applied `n` times in a row (5, 5, 5 = SPP's 5, 9, 13)."""

    def __init__(self, c1: int, c2: int, k: int = 5, n: int = 3, shortcut: bool = False):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (n + 1), c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.n = n
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(self.n):
            y.append(self.m(y[-1]))
        y = self.cv2(torch.cat(y, 1))
        return y + x if self.add else y


class C2f(nn.Module):
    """YOLOv8's CSP block: one conv split in two halves, bottlenecks chained on the second, every
    intermediate concatenated."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions with 1x1-conv q/k/v, plus a depth-wise
    3x3 positional term on v."""

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        attn = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)
        x = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(x)


class PSABlock(nn.Module):
    """Attention then a two-conv feed-forward, each with a residual."""

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True):
        super().__init__()
        self.attn = Attention(c, attn_ratio=attn_ratio, num_heads=num_heads)
        self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))
        self.add = shortcut

    def forward(self, x):
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """YOLOv11's attention block: PSABlocks on one half of the channels."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA needs equal input and output widths, got {c1} and {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)) for _ in range(n)))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class C3k2(C2f):
    """YOLOv11's C2f whose blocks are C3k (`c3k`, the m/l/x scales) or plain bottlenecks (e = 0.5)."""

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, g: int = 1,
                 shortcut: bool = True):
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.ModuleList(C3k(self.c, self.c, 2, shortcut, g) if c3k else Bottleneck(self.c, self.c, shortcut, g)
                               for _ in range(n))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Graph(nn.Module):
    """The publishers' layer graph: `model` is the layer list (keys `model.<i>....`), each layer
    with `f` (where its input comes from: -1 the previous layer, else indices) as in the yaml."""

    def __init__(self, layers: list[nn.Module], froms: list):
        super().__init__()
        self.model = nn.Sequential(*layers)
        self.froms = [f for f in froms]
        self.save = sorted({x % i for i, f in enumerate(froms) for x in ([f] if isinstance(f, int) else f) if x != -1})

    def forward(self, x):
        outs: list = []
        for i, (m, f) in enumerate(zip(self.model, self.froms)):
            if f != -1:
                x = outs[f] if isinstance(f, int) else [x if j == -1 else outs[j] for j in f]
            x = m(x)
            outs.append(x if i in self.save else None)
        return x


def literal(a, names: dict | None = None):
    """A yaml argument as the publishers' parsers read it: a name they define ('nc', 'anchors'),
    else a Python literal written as a string ('None'), else the value itself. Never eval."""
    if not isinstance(a, str):
        return a
    if names and a in names:
        return names[a]
    try:
        return ast.literal_eval(a)
    except (ValueError, SyntaxError):
        return a


def repeat(make, n: int) -> nn.Module:
    """A yaml row with n > 1 of a non-repeating module: n copies in a Sequential (keys `.0.`, `.1.`)."""
    return nn.Sequential(*(make() for _ in range(n))) if n > 1 else make()


def build_graph(rows: list, nc: int, modules: dict, depth: float, width: float, head, *, what: str,
                max_channels: float = float("inf"), keep_width=lambda c: False, adjust=lambda cls, args: args) -> Graph:
    """The layer graph of yaml rows `[from, number, module, args]`, as both families parse them:
    `number` scaled by `depth` (kept at 1), channels capped at `max_channels`, scaled by `width` and
    rounded up to a multiple of 8 (unless `keep_width(c)`); a repeating module takes the number as
    its argument, any other is repeated in a Sequential. `head(froms, channels)` makes the last
    row's Detect; `adjust(cls, args)` a family's own argument rule."""
    layers, froms, ch = [], [], [3]
    for i, row in enumerate(rows):
        try:
            f, n, name, args = row
        except (TypeError, ValueError):
            raise LayoutError(f"{what} yaml row {i}: {row!r} is not [from, number, module, args]") from None
        args = [literal(a, {"nc": nc}) for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        c_in = ch[f] if isinstance(f, int) else None
        if name in modules:
            cls, repeats = modules[name]
            c2 = args[0] if keep_width(args[0]) else make_divisible(min(args[0], max_channels) * width, 8)
            args = [c_in, c2, *args[1:]]
            if repeats:
                args.insert(2, n)
                n = 1
            args = adjust(cls, args)
            m = repeat(lambda: cls(*args), n)
        elif name == "nn.Upsample":
            size, scale, mode = (list(args) + [None, None, "nearest"])[:3]
            m, c2 = nn.Upsample(size=size, scale_factor=scale, mode=mode), c_in
        elif name == "Concat":
            m, c2 = Concat(*args), sum(ch[x] for x in f)
        elif name == "Detect":
            if i != len(rows) - 1:
                raise LayoutError(f"{what} yaml row {i}: Detect must be the last row")
            m, c2 = head(f, [ch[x] for x in f]), None
        else:
            raise LayoutError(f"{what} yaml row {i}: module {name!r} is not supported")
        layers.append(m)
        froms.append(f)
        if i == 0:
            ch = []
        ch.append(c2)
    if not rows or rows[-1][2] != "Detect":
        raise LayoutError(f"{what} yaml: no Detect row")
    return Graph(layers, froms)


# ------------------------------------------------------------------ what the yaml does not say
_ACTIVATIONS = {
    "torch.nn.modules.activation.SiLU": lambda a: nn.SiLU(),
    "torch.nn.modules.linear.Identity": lambda a: nn.Identity(),
    "torch.nn.modules.activation.ReLU": lambda a: nn.ReLU(),
    "torch.nn.modules.activation.Hardswish": lambda a: nn.Hardswish(),
    "torch.nn.modules.activation.LeakyReLU": lambda a: nn.LeakyReLU(float(a.get("negative_slope", 0.01))),
}


class LayoutError(ValueError):
    """The checkpoint does not describe the network the yaml builds (one line, what and where)."""


def module_tree(obj, prefix: str = "") -> dict[str, "unpickle.Inert"]:
    """Every module stand-in of a pickled network by its dotted path (`model.3.cv1`), as
    nn.Module.named_modules names them."""
    out = {}
    stack = [(prefix, obj, 0)]
    while stack:
        name, m, depth = stack.pop()
        if depth > unpickle.MAX_DEPTH:
            raise LayoutError("modules nested too deep")
        out[name] = m
        for k, v in (m.attrs.get("_modules") or {}).items():
            if isinstance(v, unpickle.Inert):
                stack.append((f"{name}.{k}" if name else k, v, depth + 1))
    return out


def apply_details(net: nn.Module, tree: dict) -> None:
    """Set each Conv's activation and each BatchNorm's eps to what the checkpoint holds; refuse
    an activation patou does not know, or a Conv the checkpoint does not have."""
    for name, m in net.named_modules():
        if isinstance(m, Conv):
            src = tree.get(name)
            if src is None:
                raise LayoutError(f"layer {name} ({type(m).__name__}) is not in the checkpoint")
            act = (src.attrs.get("_modules") or {}).get("act")
            qual = getattr(act, "qualname", None)
            if qual is None:  # a Conv without an act module: the file's class differs from what the yaml names
                raise LayoutError(f"layer {name}: no activation module in the checkpoint")
            if qual not in _ACTIVATIONS:
                raise LayoutError(f"layer {name}: activation {qual} is not supported")
            m.act = _ACTIVATIONS[qual](act.attrs)
        elif isinstance(m, nn.BatchNorm2d):
            src = tree.get(name)
            eps = src.attrs.get("eps") if src is not None else None
            if isinstance(eps, float) and 0 < eps < 1:
                m.eps = eps


def check_shapes(want: dict, refs: dict[str, "unpickle.TensorRef"]) -> None:
    """Every key of the network's state dict in the checkpoint and no other, every shape equal
    (read from the pickle: nothing is allocated), or LayoutError."""
    missing = [k for k in want if k not in refs]
    unexpected = [k for k in refs if k not in want]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} (e.g. {missing[0]})"] if missing else []) + \
                ([f"unexpected {len(unexpected)} (e.g. {unexpected[0]})"] if unexpected else [])
        raise LayoutError("the checkpoint's tensors do not fit the network its yaml describes: " + ", ".join(parts))
    for k, t in want.items():
        if tuple(refs[k].shape) != tuple(t.shape):
            raise LayoutError(f"{k} has shape {list(refs[k].shape)} in the checkpoint, the yaml gives {list(t.shape)}")


def load_strict(net: nn.Module, refs: dict[str, "unpickle.TensorRef"]) -> None:
    """Map the checkpoint's tensors onto `net` by name, strictly (check_shapes first)."""
    want = net.state_dict()
    check_shapes(want, refs)
    sd = {}
    for k, t in want.items():
        v = refs[k].tensor()
        sd[k] = v.to(t.dtype) if v.is_floating_point() or t.is_floating_point() else v
    net.load_state_dict(sd, strict=True)
