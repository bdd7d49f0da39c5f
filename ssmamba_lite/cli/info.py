"""`ssmamba-lite info`: versions, and which scan implementation runs for CPU and CUDA tensors."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="show versions and which scan implementation runs where")
    p.set_defaults(func=_info)


def _info(args) -> int:
    import torch

    from ssmamba_lite import __version__
    from ssmamba_lite.mamba import conv_report
    from ssmamba_lite.scan import backend_report

    print(f"ssmamba_lite {__version__}, torch {torch.__version__}")
    name, why = backend_report(torch.empty(1, device="cpu"))
    print(f"CPU tensors  -> {name} scan: {why}")
    if torch.cuda.is_available():
        name, why = backend_report(torch.empty(1, device="cuda"))
        print(f"CUDA tensors -> {name} scan: {why}")
        print(f"CUDA causal convolution -> {conv_report()}")
    else:
        print("CUDA: no GPU visible")
    return 0
