"""Forward-time benchmark of the structured updates, measured side by side in one run.

1. SURM circulant at d = 384 and d = 4096: the FFT product vs the dense path (build circ(c), then
   a matmul) and vs a matmul with the dense matrix prebuilt (what a merged layer costs).
2. LoRTA: our per-layer contraction vs the reference's way (rebuild all L·M dense ΔW from the CP
   factors, then one matmul per matrix), for one model's worth of adapted matrices, forward and
   forward + backward, at MiniLM (d 384, 12 heads, 6 layers) and RoBERTa-base (768, 12, 12) sizes.

    python scripts/bench_structured.py [--tokens 1024] [--device cpu|cuda]
"""

import argparse

import torch
from torch.utils import benchmark

from methods.lorta import LortaFactors
from methods.structured import Circulant


def median_ms(statement, device: torch.device, **globals_) -> float:
    timer = benchmark.Timer(stmt=statement, globals=globals_, num_threads=torch.get_num_threads())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * timer.blocked_autorange(min_run_time=1.0).median


def bench_circulant(tokens: int, device: torch.device) -> None:
    print(f"SURM circulant, x: {tokens}×d, float32, {device}")
    print(f"{'d':>6} {'fft ms':>9} {'dense ms':>9} {'prebuilt ms':>12} {'dense/fft':>10} {'prebuilt/fft':>13}")
    for d in (384, 4096):
        circulant = Circulant(d, 1.0, device=device)
        with torch.no_grad():
            circulant.c_B.normal_()
        x = torch.randn(tokens, d, device=device)
        prebuilt = circulant.dense().detach()
        with torch.no_grad():
            fft = median_ms("m(x)", device, m=circulant, x=x)
            dense = median_ms("x @ m.dense().T", device, m=circulant, x=x)
            matmul = median_ms("x @ w.T", device, w=prebuilt, x=x)
        print(f"{d:>6} {fft:>9.3f} {dense:>9.3f} {matmul:>12.3f} {dense / fft:>10.2f} {matmul / fft:>13.2f}")


def rebuild_all(factors: LortaFactors, xs: list[torch.Tensor], layers: int, matrices: int) -> torch.Tensor:
    """The reference's forward: every ΔW_{l,m} dense, then the products."""
    deltas = [factors.delta_weight(l, m, narrow=False) for l in range(layers) for m in range(matrices)]
    return sum((x @ delta.T).sum() for x, delta in zip(xs, deltas))


def contract(factors: LortaFactors, xs: list[torch.Tensor], layers: int, matrices: int) -> torch.Tensor:
    positions = [(l, m) for l in range(layers) for m in range(matrices)]
    return sum(factors.product(x, l, m, narrow=False).sum() for x, (l, m) in zip(xs, positions))


def bench_lorta(tokens: int, device: torch.device, r: int = 8) -> None:
    print(f"\nLoRTA, r = {r}, Wq/Wk/Wv/Wo of every layer, x: {tokens}×d per matrix, float32, {device}")
    print(f"{'model':<14} {'pass':<9} {'ours ms':>9} {'rebuild ms':>11} {'rebuild/ours':>13}")
    for label, d, heads, layers in (("minilm", 384, 12, 6), ("roberta-base", 768, 12, 12)):
        factors = LortaFactors(d, heads, layers, 4, r, device=device)
        with torch.no_grad():
            factors.B.normal_()
        xs = [torch.randn(tokens, d, device=device) for _ in range(layers * 4)]
        for kind, statement in (("forward", "f(factors, xs, L, 4)"), ("fwd+bwd", "f(factors, xs, L, 4).backward()")):
            grad = torch.enable_grad() if kind == "fwd+bwd" else torch.no_grad()
            with grad:
                ours = median_ms(statement, device, f=contract, factors=factors, xs=xs, L=layers)
                reference = median_ms(statement, device, f=rebuild_all, factors=factors, xs=xs, L=layers)
            print(f"{label:<14} {kind:<9} {ours:>9.3f} {reference:>11.3f} {reference / ours:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="rows of x (batch × sequence length)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_circulant(args.tokens, device)
    bench_lorta(args.tokens, device)


if __name__ == "__main__":
    main()
