"""Structured matrices for SURM (methods/surm.py), each with a fast product and its dense form.

- Circulant(d): circ(c_B ⊙ c_A), the d×d matrix C_ij = c[(i − j) mod d] with first column
  c = c_B ⊙ c_A; C x = irfft(rfft(x)·rfft(c)) in O(d log d). 2d parameters.
- ToeplitzProduct(d): T(b)·T(a) with T(v)_ij = v[|i − j|] the symmetric Toeplitz matrix of v;
  T(v) x is the first d entries of a circulant product of size n = 2^⌈log2(2d − 1)⌉ whose first
  column is [v, 0, …, 0, v_{d−1}, …, v_1]. 2d parameters.
- Kronecker(d_in, d_out, r): B ⊗ A with A: r×(d_in/r), B: (d_out/r)×r; (B ⊗ A) x = vec(B X Aᵀ)
  with X the r×(d_in/r) reshaping of x. d_in + d_out parameters, for any r dividing both sizes.

`forward(x)` applies the matrix to the last dimension of x (never building it; FFTs run in
float32 for half-precision inputs); `dense()` builds it, for merging and for tests.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError


def circulant_product(column: torch.Tensor, x: torch.Tensor, size: int) -> torch.Tensor:
    """circ(column) (size×size) applied to x zero-padded to `size` along the last dimension."""
    compute = torch.promote_types(x.dtype, torch.float32)
    spectrum = torch.fft.rfft(x.to(compute), n=size) * torch.fft.rfft(column.to(compute), n=size)
    return torch.fft.irfft(spectrum, n=size).to(x.dtype)


class Circulant(nn.Module):
    def __init__(self, d: int, a_std: float, **factory):
        super().__init__()
        self.c_A = nn.Parameter(torch.randn(d, **factory) * a_std)
        self.c_B = nn.Parameter(torch.zeros(d, **factory))

    def column(self) -> torch.Tensor:
        return self.c_B * self.c_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return circulant_product(self.column(), x, len(self.c_A))

    def dense(self) -> torch.Tensor:
        d = len(self.c_A)
        index = (torch.arange(d)[:, None] - torch.arange(d)[None, :]) % d
        return self.column()[index.to(self.c_A.device)]


def symmetric_toeplitz_product(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    d = len(v)
    size = 2 ** math.ceil(math.log2(max(2 * d - 1, 1)))
    column = torch.cat([v, v.new_zeros(size - 2 * d + 1), v[1:].flip(0)])
    return circulant_product(column, x, size)[..., :d]


def symmetric_toeplitz(v: torch.Tensor) -> torch.Tensor:
    d = len(v)
    index = (torch.arange(d)[:, None] - torch.arange(d)[None, :]).abs()
    return v[index.to(v.device)]


class ToeplitzProduct(nn.Module):
    def __init__(self, d: int, a_std: float = 0.02, **factory):
        super().__init__()
        self.toeplitz_a = nn.Parameter(torch.randn(d, **factory) * a_std)
        self.toeplitz_b = nn.Parameter(torch.zeros(d, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return symmetric_toeplitz_product(self.toeplitz_b, symmetric_toeplitz_product(self.toeplitz_a, x))

    def dense(self) -> torch.Tensor:
        return symmetric_toeplitz(self.toeplitz_b) @ symmetric_toeplitz(self.toeplitz_a)


class Kronecker(nn.Module):
    def __init__(self, d_in: int, d_out: int, r: int, **factory):
        super().__init__()
        self.kron_A = nn.Parameter(torch.empty(r, d_in // r, **factory))
        self.kron_B = nn.Parameter(torch.zeros(d_out // r, r, **factory))
        nn.init.kaiming_uniform_(self.kron_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.kron_A.shape[0]
        blocks = x.reshape(*x.shape[:-1], r, -1)  # X: r × (d_in/r)
        return (self.kron_B @ F.linear(blocks, self.kron_A)).reshape(*x.shape[:-1], -1)

    def dense(self) -> torch.Tensor:
        return torch.kron(self.kron_B, self.kron_A)


STRUCTURES = ("circulant", "toeplitz", "kronecker")


def build_structure(
    structure: str, d_in: int, d_out: int, r: int, circulant_std: float, where: str, **factory
) -> nn.Module:
    """The structured d_out×d_in matrix; circulant and Toeplitz need a square layer, Kronecker
    needs r to divide both sizes (errors name the layer `where`)."""
    if structure in ("circulant", "toeplitz") and d_in != d_out:
        raise HarnessError(
            f"surm: structure={structure} needs a square layer, but '{where}' is {d_out}×{d_in}; "
            "target square layers or use structure=kronecker"
        )
    if structure == "circulant":
        return Circulant(d_in, circulant_std, **factory)
    if structure == "toeplitz":
        return ToeplitzProduct(d_in, **factory)
    if d_in % r or d_out % r:
        raise HarnessError(
            f"surm: structure=kronecker needs method.r={r} to divide both sizes of '{where}' ({d_out}×{d_in})"
        )
    return Kronecker(d_in, d_out, r, **factory)
