"""Per-draw statistics of the encoder's parameter gradient, without per-draw gradients.

At frozen parameters and a fixed batch of images, the encoder's activations are the
same for every gradient draw; only the gradient reaching its output (the logits)
changes. So the encoder's parameter gradient is a fixed linear map of that output
gradient, ``g_s = Jᵀ G_s``, and every statistic the harness needs follows from it:

* Σ_s g_s = Jᵀ (Σ_s G_s): one backward of the summed output gradient;
* ⟨g_s, r⟩ = ⟨G_s, J r⟩: one forward-mode product ``J r`` per reference;
* ‖g_s‖²: per layer, with δ_s ``[B, out]`` the gradient at the layer's output and h
  ``[B, in]`` its (fixed) input, ‖δ_sᵀ h‖² + ‖Σ_b δ_s‖². Either form the layer's
  gradient (B·in·out per draw) or use the Gram matrix H = h hᵀ, fixed for all draws:
  ‖δᵀ h‖² = ⟨δ, H δ⟩ (B²·out per draw; the "ghost norm" of per-example gradient
  clipping, with images in the role of tokens). The ghost form is cheaper exactly
  when B < in, so it is chosen per layer, as mixed ghost clipping does.

Only δ_s (``[n, B, out]`` per layer) is formed per draw, never a parameter-sized vector.
Parameters are flattened layer by layer, weight (``[out, in]``, row-major) then bias.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .model import MLP


class EncoderMap:
    """The map G ``[B, out]`` ↦ Jᵀ G ``[P]`` of an MLP at fixed parameters and inputs.

    mlp: the encoder (its parameters are read, not differentiated).
    x: images ``[B, 784]``.
    ghost: per-layer choice; None picks the ghost form where B < in (fewer flops).
    """

    def __init__(self, mlp: MLP, x: Tensor, ghost: list[bool] | None = None):
        with torch.no_grad():
            _, inputs, pre = mlp.forward_cached(x)
            self.inputs = inputs
            self.derivs = [mlp.act_grad(a) for a in pre[:-1]]
            self.weights = [layer.weight.detach().clone() for layer in mlp.layers]
        self.batch = x.shape[0]
        self.shapes = [tuple(w.shape) for w in self.weights]  # (out, in)
        self.ghost = ghost if ghost is not None else [self.batch < i for _, i in self.shapes]
        with torch.no_grad():
            self.grams = [h @ h.T if g else None for h, g in zip(inputs, self.ghost)]
        self.dim = sum(o * i + o for o, i in self.shapes)

    def backward(self, grad_out: Tensor) -> tuple[Tensor, Tensor]:
        """For output gradients ``[n, B, out]``: (Σ_s Jᵀ G_s ``[P]``, ‖Jᵀ G_s‖² ``[n]``)."""
        delta = grad_out
        n = delta.shape[0]
        sq = torch.zeros(n, dtype=delta.dtype, device=delta.device)
        pieces = []
        for layer in reversed(range(len(self.weights))):
            h = self.inputs[layer]
            summed = delta.sum(0)  # Σ_s δ_s: the gradient is linear in δ
            pieces.append(summed.sum(0))  # bias
            pieces.append((summed.T @ h).reshape(-1))  # weight [out, in]
            if self.ghost[layer]:
                weight_sq = (delta * torch.matmul(self.grams[layer], delta)).sum((1, 2))
            else:
                weight_sq = (delta.transpose(1, 2) @ h).square().sum((1, 2))
            sq = sq + weight_sq + delta.sum(1).square().sum(1)
            if layer > 0:
                delta = (delta @ self.weights[layer]) * self.derivs[layer - 1]
        return torch.cat(pieces[::-1]), sq

    def vjp(self, grad_out: Tensor) -> Tensor:
        """Jᵀ G for one output gradient ``[B, out]``: the flat parameter gradient ``[P]``."""
        return self.backward(grad_out.unsqueeze(0))[0]

    def jvp(self, tangent: Tensor) -> Tensor:
        """J v for a flat parameter direction ``v [P]``: the output's change ``[B, out]``."""
        dtype = self.weights[0].dtype
        tangent = tangent.to(dtype)
        dh = None
        offset = 0
        for layer, (o, i) in enumerate(self.shapes):
            dw = tangent[offset : offset + o * i].reshape(o, i)
            db = tangent[offset + o * i : offset + o * i + o]
            offset += o * i + o
            da = self.inputs[layer] @ dw.T + db
            if dh is not None:
                da = da + dh @ self.weights[layer].T
            dh = da * self.derivs[layer] if layer < len(self.shapes) - 1 else da
        return dh

    @staticmethod
    def flatten(mlp: MLP) -> Tensor:
        """The MLP's parameters (or their gradients' layout) as one flat vector ``[P]``."""
        return torch.cat([t.reshape(-1) for layer in mlp.layers for t in (layer.weight, layer.bias)])

    @staticmethod
    def flatten_grads(grads: list[Tensor]) -> Tensor:
        """Gradients listed weight, bias, weight, bias, ... -> flat ``[P]``."""
        return torch.cat([g.reshape(-1) for g in grads])
