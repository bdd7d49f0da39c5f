"""Fast paths. Each computes what a readable reference computes, and a test holds it there
(tests/test_scan.py, tests/test_kernels.py): outputs and the gradients of every input.

    scan_cpu.py   fused numba kernel of the selective scan for CPU tensors (forward and a
                  chunked, recomputing backward); `scan.selective_scan` picks it on CPU
    vecmath.py    exp and softplus in arithmetic the compiler vectorises (float32), for the
                  numba kernels; reference: the C library's, PyTorch's softplus
    dwconv_cpu.py the weight gradient of a large depthwise convolution on CPU (numba), for
                  the conv mixer's 7 x 7 filters (layers/dwconv.py); reference: PyTorch's

A new scan fast path: a module here with the core signature (u, delta, A, B, C) -> (y, last state)
(scan_cpu's also takes D, delta_bias and delta_softplus and applies them itself), a backend
name in scan.BACKENDS and its branch in scan.which_backend / scan.selective_scan, and a test
against `selective_scan_reference`. Nothing here imports from the rest of the package.
"""
