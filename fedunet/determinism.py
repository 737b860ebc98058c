"""Deterministic CUDA training: the ops of our models that have no deterministic CUDA kernel,
replaced by equivalents that do, on CUDA with ``runtime.deterministic`` only.

With ``torch.use_deterministic_algorithms(True)`` PyTorch raises (or, with ``warn_only``, warns
and runs the nondeterministic kernel) when the backward of an adaptive average pooling runs on
CUDA.  What our models use, and what happens to it:

* ``nn.AdaptiveAvgPool2d(1)`` (VGG, ResNet, the fusion's linear head): ATen computes it as
  ``mean(dim=(-2, -1))`` on every device (its backward is the mean's: deterministic).  Left as
  is, and bit-identical to the mean on CPU (tested).
* ``nn.AdaptiveAvgPool2d(k)``, ``k > 1`` (the small CNN's ``AdaptiveAvgPool2d(2)``): replaced by
  ``avg_pool2d`` with kernel = stride = input / k when the input divides evenly (bit-identical
  on CPU, tested), else by a product with fixed averaging matrices.
* ``nn.AdaptiveAvgPool1d(K)`` (``FeatureProjection(kind="pool")``, the common feature width of
  the prototype methods and FedKD): replaced by ``avg_pool1d`` when the length divides evenly,
  else by ``x @ P`` with P the fixed (length x K) averaging matrix (matmul: deterministic
  with the cuBLAS workspace set, see :data:`fedunet.runtime.CUBLAS_WORKSPACE`).  Equal to the
  adaptive pooling up to float rounding, not always bit-identical on CPU: hence CUDA only.

``index_add_`` (prototype and logit sums of FedProto, FedTGP, FD) and ``cumsum`` have
deterministic CUDA kernels that PyTorch selects in deterministic mode; nothing to replace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pool_matrix(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(n x k) matrix whose column j averages the inputs adaptive pooling assigns to output j."""
    j = torch.arange(k, device=device)
    start, end = (j * n) // k, -((-(j + 1) * n) // k)  # floor(j n / k), ceil((j + 1) n / k)
    i = torch.arange(n, device=device).unsqueeze(1)
    inside = (i >= start) & (i < end)
    return inside.to(dtype) / (end - start).to(dtype)


def _size(value, like: int) -> int:
    return like if value is None else int(value)


class DeterministicAdaptiveAvgPool(nn.Module):
    """Adaptive average pooling (1-d or 2-d) built from ops with deterministic CUDA backward."""

    def __init__(self, output_size, dims: int):
        super().__init__()
        self.output_size = output_size
        self.dims = dims

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, dims={self.dims}"

    def forward(self, x: Tensor) -> Tensor:
        if self.dims == 1:
            n = x.shape[-1]
            k = _size(self.output_size if not isinstance(self.output_size, tuple) else self.output_size[0], n)
            if n % k == 0:
                return F.avg_pool1d(x, n // k)
            return x @ pool_matrix(n, k, x.dtype, x.device)
        h, w = x.shape[-2:]
        size = self.output_size if isinstance(self.output_size, tuple) else (self.output_size, self.output_size)
        oh, ow = _size(size[0], h), _size(size[1], w)
        if oh == 1 and ow == 1:
            return x.mean(dim=(-2, -1), keepdim=True)
        if h % oh == 0 and w % ow == 0:
            return F.avg_pool2d(x, (h // oh, w // ow))
        ph, pw = pool_matrix(h, oh, x.dtype, x.device), pool_matrix(w, ow, x.dtype, x.device)
        return torch.einsum("...hw,hi,wj->...ij", x, ph, pw)


def needs_replacement(module: nn.Module) -> bool:
    if isinstance(module, nn.AdaptiveAvgPool1d):
        return True
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return size not in (1, (1, 1))
    return False


def replace_nondeterministic(model: nn.Module) -> list[str]:
    """Swap, in place, every module of ``model`` that has no deterministic CUDA backward for its
    equivalent above; returns the names swapped.  Parameter-free modules only, so the state_dict
    (and every payload) is unchanged."""
    swapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if needs_replacement(child):
                dims = 1 if isinstance(child, nn.AdaptiveAvgPool1d) else 2
                setattr(module, child_name, DeterministicAdaptiveAvgPool(child.output_size, dims))
                swapped.append(f"{name}.{child_name}" if name else child_name)
    return swapped
