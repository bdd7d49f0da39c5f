"""`ssmamba-lite info`: versions, and which scan implementation runs for CPU and CUDA tensors."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="show versions and which scan implementation runs where")
    p.set_defaults(func=_info)


def _info(args) -> int:
    import torch

    from ssmamba_lite import __version__
    from ssmamba_lite.scan import cpu_kernel, cuda_kernel, which_backend

    print(f"ssmamba_lite {__version__}, torch {torch.__version__}")
    print(f"CPU tensors  -> {which_backend(torch.empty(1, device='cpu'))} scan"
          f" (numba kernel {'available' if cpu_kernel() else 'missing'})")
    if torch.cuda.is_available():
        print(f"CUDA tensors -> {which_backend(torch.empty(1, device='cuda'))} scan"
              f" (mamba-ssm kernel {'available' if cuda_kernel() else 'missing'})")
    else:
        print("CUDA: no GPU visible")
    return 0
