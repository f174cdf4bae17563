"""Seeded initialisation that pairs variants: the same seed gives every variant the same trunk.

Module constructors draw from the global RNG in construction order, so a gate built between two
convs shifts every later draw and no two variants would start alike. Here the trunk (stem,
convs, BNs, shortcuts, classifier: everything outside the attention modules and the `ecab_head`
head) is re-initialised from `seed` in a fixed order that gates do not enter, and each gate from
its own generator, derived from the seed and the gate's name.
"""

from __future__ import annotations

import hashlib
import threading

import torch
from torch import nn

from ecab_tune.models.attention import AttentionModule

_GATED = (AttentionModule,)
# The global RNG is one per process: models built at once in threads (`compare --streams`)
# would interleave their draws (module constructors draw too) and start from weights no seed
# gives. Held while a model is built and while it is initialised (hence re-entrant).
GLOBAL_RNG = threading.RLock()


def _derived_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _is_gate(name: str, gates: list[str]) -> bool:
    return any(name == g or name.startswith(g + ".") for g in gates)


def _reset(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d) and not isinstance(module, nn.Conv1d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif hasattr(module, "reset_parameters"):
        module.reset_parameters()


def gate_names(model: nn.Module) -> list[str]:
    """Names of the modules outside the shared trunk: attention gates and the `ecab_head` head."""
    names = [n for n, m in model.named_modules() if isinstance(m, _GATED)]
    if getattr(model, "head", None) is not None:
        names.append("head")
    return names


def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Initialise `model` in place from `seed` without touching the caller's RNG state."""
    gates = gate_names(model)
    with GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, module in model.named_modules():
            if not _is_gate(name, gates):
                _reset_own(module)
        for gate in gates:
            torch.manual_seed(_derived_seed(seed, gate))
            for module in model.get_submodule(gate).modules():
                _reset_own(module)
    return model


def _reset_own(module: nn.Module) -> None:
    # Only leaf modules own parameters here (BlockLinear is a leaf with its own reset).
    if next(module.children(), None) is None:
        _reset(module)


def trunk_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the trunk's convolutions and norms (stem and stages)."""
    gates = gate_names(model)
    return {
        k: v
        for k, v in model.state_dict().items()
        if not _is_gate(k.rsplit(".", 1)[0], gates) and not k.startswith(("fc.", "head."))
    }


def init_hash(model: nn.Module) -> str:
    """A short SHA-256 of the trunk's weights: equal across variants built from one seed."""
    digest = hashlib.sha256()
    for key, tensor in sorted(trunk_state(model).items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
