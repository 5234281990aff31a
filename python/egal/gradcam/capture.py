"""Capture one layer's output during a forward pass, with autograd starting there.

The forward pass runs without autograd up to the target layer; the hook turns
autograd on from that point, so the graph (and the memory it holds) covers only
the layers between the target and the logits, which is all a Grad-CAM backward
needs. The hook hands the rest of the network a clone of the captured map:
layers downstream may modify their input in place (DenseNet's ReLU(inplace=True)
after a norm layer), and the clone keeps the captured activations intact.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..models.classifier import check_target_layer


class LayerCapture:
    def __init__(self, name: str):
        self.name = name
        self.activations = None  # [B, K, h, w], an autograd leaf when grad was asked for
        self.calls = 0

    def check_single_call(self) -> None:
        if self.calls != 1:
            raise ValueError(
                f"target layer {self.name!r} ran {self.calls} times in one forward pass; Grad-CAM needs a layer "
                "that runs exactly once (a module reused inside a block, like ResNet's BasicBlock.relu, is ambiguous: "
                "target the block itself)"
            )


@contextmanager
def capture_layer(model: torch.nn.Module, name: str, *, grad_from_here: bool):
    """Within the block, forward passes of `model` record the output of module `name`.

    grad_from_here: make the captured map an autograd leaf and enable autograd
    for the rest of the forward pass (the caller runs the pass under no_grad).
    The hook is removed and the grad mode restored on leaving, even on error.
    """
    module = check_target_layer(model, name)
    capture = LayerCapture(name)

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise ValueError(
                f"target layer {name!r} must output a [B, K, h, w] tensor, got "
                f"{tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}"
            )
        capture.calls += 1
        if grad_from_here:
            leaf = output.detach().requires_grad_(True)
            capture.activations = leaf
            torch.set_grad_enabled(True)  # restored by the context manager below
            return leaf.clone()
        capture.activations = output
        return output.clone()

    grad_mode = torch.is_grad_enabled()
    handle = module.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()
        torch.set_grad_enabled(grad_mode)
