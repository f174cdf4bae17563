"""CIFAR-style residual networks with a pluggable attention gate in every block.

Basic-block ResNets of depth 6n+2 (8/20/32/56/110; stages of 16/32/64 channels) and a bottleneck
ResNet-50 with a 3×3 stem (the study's baseline), all with a width multiplier. A block hands the
GAP descriptors of its conv outputs to a running list, so a bridge gate can read earlier layers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ecab_tune.config import is_int
from ecab_tune.models.attention import AttentionModule
from ecab_tune.models.bridge import EcabHead, Layer, descriptor
from ecab_tune.models.registry import HEAD, check_options, create_attn, register_model


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


class ResidualBlock(nn.Module):
    """conv outputs → gate on the last one → + shortcut → ReLU."""

    expansion = 1

    def __init__(
        self,
        c_in: int,
        planes: int,
        stride: int,
        attn: AttentionModule | None,
        sources: tuple[int, ...],
    ) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.shortcut = (
            nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.attn = attn
        self.sources = sources

    @classmethod
    def conv_widths(cls, planes: int) -> list[int]:
        raise NotImplementedError

    def conv_outputs(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, bank: list[Tensor] | None) -> Tensor:
        outputs = self.conv_outputs(x)
        if bank is not None:
            bank.extend(descriptor(o) for o in outputs)
        out = outputs[-1]
        if self.attn is not None:
            out = self.attn(out, [bank[i] for i in self.sources] if bank is not None else None)
        return F.relu(out + self.shortcut(x))


class BasicBlock(ResidualBlock):
    def __init__(self, c_in: int, planes: int, stride: int, *args: Any) -> None:
        super().__init__(c_in, planes, stride, *args)
        self.conv1, self.bn1 = _conv_bn(c_in, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)

    @classmethod
    def conv_widths(cls, planes: int) -> list[int]:
        return [planes, planes]

    def conv_outputs(self, x: Tensor) -> list[Tensor]:
        out1 = F.relu(self.bn1(self.conv1(x)))
        return [out1, self.bn2(self.conv2(out1))]


class Bottleneck(ResidualBlock):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, *args: Any) -> None:
        super().__init__(c_in, planes, stride, *args)
        self.conv1, self.bn1 = _conv_bn(c_in, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = _conv_bn(planes, planes * self.expansion, 1)

    @classmethod
    def conv_widths(cls, planes: int) -> list[int]:
        return [planes, planes, planes * cls.expansion]

    def conv_outputs(self, x: Tensor) -> list[Tensor]:
        out1 = F.relu(self.bn1(self.conv1(x)))
        out2 = F.relu(self.bn2(self.conv2(out1)))
        return [out1, out2, self.bn3(self.conv3(out2))]


class ResNet(nn.Module):
    """Stem → stages `stage1..` of blocks `block0..` (gates at `stageS.blockB.attn`) → head.

    Weights are set by `create_model` (`init.init_weights`), which pairs variants by seed.
    """

    def __init__(
        self,
        block: type[ResidualBlock],
        depths: Sequence[int],
        planes: Sequence[int],
        *,
        attention: str = "none",
        width: float = 1.0,
        num_classes: int = 10,
        in_chans: int = 3,
        **attention_kwargs: Any,
    ) -> None:
        super().__init__()
        numeric = isinstance(width, (int, float)) and not isinstance(width, bool)
        if not (numeric and 0 < width <= 8):
            raise ValueError(f"width={width!r} is invalid: expected 0 < width <= 8")
        if not (is_int(num_classes) and num_classes >= 2 and is_int(in_chans) and in_chans >= 1):
            raise ValueError(
                f"num_classes={num_classes!r}, in_chans={in_chans!r}: expected integers >= 2, >= 1"
            )
        check_options(attention, attention_kwargs)
        planes = [max(2, round(p * width)) for p in planes]
        c_in = planes[0]
        self.stem = nn.Sequential(*_conv_bn(in_chans, c_in, 3), nn.ReLU(inplace=True))
        layers = [Layer(stage=-1, block=-1, channels=c_in)]
        index, self.stage_names, self.keeps_bank = 0, [], attention == HEAD
        for s, (depth, p) in enumerate(zip(depths, planes, strict=True)):
            blocks: OrderedDict[str, nn.Module] = OrderedDict()
            for b in range(depth):
                layers += [Layer(s, index, c) for c in block.conv_widths(p)]
                where = f"stage{s + 1}.block{b}"
                attn, sources = create_attn(
                    attention, p * block.expansion, layers, where, **attention_kwargs
                )
                self.keeps_bank |= bool(sources)
                blocks[f"block{b}"] = block(c_in, p, 2 if s and not b else 1, attn, sources)
                c_in, index = p * block.expansion, index + 1
            self.stage_names.append(f"stage{s + 1}")
            self.add_module(self.stage_names[-1], nn.Sequential(blocks))
        self.head = (
            EcabHead([layer.channels for layer in layers] + [c_in], c_in, num_classes)
            if attention == HEAD
            else None
        )
        self.fc = None if self.head else nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        bank = [descriptor(x)] if self.keeps_bank else None
        for name in self.stage_names:
            for block in self.get_submodule(name):
                x = block(x, bank)
        pooled = descriptor(x)
        if self.head is not None:
            return self.head([*bank, pooled])
        return self.fc(pooled)


def _basic(depth: int) -> tuple[int, ...]:
    return ((depth - 2) // 6,) * 3


@register_model
def resnet8(**kw: Any) -> ResNet:
    return ResNet(BasicBlock, _basic(8), (16, 32, 64), **kw)


@register_model
def resnet20(**kw: Any) -> ResNet:
    return ResNet(BasicBlock, _basic(20), (16, 32, 64), **kw)


@register_model
def resnet32(**kw: Any) -> ResNet:
    return ResNet(BasicBlock, _basic(32), (16, 32, 64), **kw)


@register_model
def resnet56(**kw: Any) -> ResNet:
    return ResNet(BasicBlock, _basic(56), (16, 32, 64), **kw)


@register_model
def resnet110(**kw: Any) -> ResNet:
    return ResNet(BasicBlock, _basic(110), (16, 32, 64), **kw)


@register_model
def resnet50(**kw: Any) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), **kw)
