"""`python -m qtip_ops.demo`: quantize a random Gaussian matrix with each code at 2, 3 and 4 bits and print
the MSE against the distortion-rate bound 2^(-2K), and the error of the fused gemv against x @ W_hat^T."""

from __future__ import annotations

import argparse
import time

import torch

from .quantize_matrix import quantize_matrix

MODES = ("1mad", "3inst", "hyb")


def run(rows: int, cols: int, bits: list[int], modes: list[str], seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=gen)
    x = torch.randn(4, cols, generator=gen)
    results = []
    for mode in modes:
        for k in bits:
            start = time.perf_counter()
            q, recon = quantize_matrix(weight, K=k, mode=mode)
            seconds = time.perf_counter() - start
            y = q.apply(x)
            exact = x.double() @ recon.double().T
            results.append({
                "mode": mode,
                "K": k,
                "mse": (recon - weight).square().mean().item(),
                "bound": 2.0 ** (-2 * k),
                "gemv_rel_err": ((y.double() - exact).norm() / exact.norm()).item(),
                "ms_per_tile": 1000 * seconds / (rows * cols / 256),
            })
            print_row(results[-1], flush=True)
    return results


def print_header(rows: int, cols: int) -> None:
    print(f"QTIP on a {rows}x{cols} N(0,1) matrix (L=16, 16x16 tail-biting tiles, {torch.get_num_threads()} threads)")
    print(f"{'mode':>6} {'K':>2} {'MSE':>9} {'D(R)=2^-2K':>11} {'MSE/D(R)':>9} {'gemv rel err':>13} {'ms/tile':>8}")


def print_row(r: dict, flush: bool = False) -> None:
    print(f"{r['mode']:>6} {r['K']:>2} {r['mse']:>9.5f} {r['bound']:>11.5f} {r['mse'] / r['bound']:>9.3f} "
          f"{r['gemv_rel_err']:>13.2e} {r['ms_per_tile']:>8.1f}", flush=flush)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=128, help="matrix rows, a multiple of 16 (default 128)")
    parser.add_argument("--cols", type=int, default=256, help="matrix columns, a multiple of 16 (default 256)")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], help="K values (default 2 3 4)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=["lut", "1mad", "2mad", "3inst", "hyb"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows % 16 or args.cols % 16 or args.rows <= 0 or args.cols <= 0:
        parser.error(f"--rows and --cols must be positive multiples of 16, got {args.rows}x{args.cols}")
    print_header(args.rows, args.cols)
    run(args.rows, args.cols, args.bits, args.modes, args.seed)


if __name__ == "__main__":
    main()
