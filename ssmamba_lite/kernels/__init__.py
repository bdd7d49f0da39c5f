"""Fast paths of the selective scan. Each computes exactly what `ssmamba_lite.scan`'s readable
reference computes, and a test holds it there (tests/test_scan.py): outputs, last states and
the gradients of every input.

    scan_cpu.py   fused numba kernel for CPU tensors (forward and a chunked, recomputing
                  backward); `scan.selective_scan` picks it for CPU tensors

A new fast path: a module here with the core signature (u, delta, A, B, C) -> (y, last state),
a backend name in scan.BACKENDS and its branch in scan.which_backend / scan.selective_scan,
and a test against `selective_scan_reference`. Nothing here imports from the rest of the package.
"""
