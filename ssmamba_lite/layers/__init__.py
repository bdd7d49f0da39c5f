"""Layers the network is built from, besides the paper's own modules (lpr.py, dms.py).

    mixers.py   token mixers: "conv", "dms" (wraps dms.DirectionalMultiScale), "mamba1d",
                "attention"; `make_mixer(kind, ...)` builds one by name
    mlp.py      the per-token MLP of every block
    dwconv.py   DepthwiseConv2d: the conv mixer's filters, whose weight gradient on CPU comes
                from a numba kernel (kernels/dwconv_cpu.py)

A new mixer: a class in mixers.py taking and returning (batch, C, H, W), its name in MIXERS and
a branch in make_mixer; model.SSMambaConfig.mixer then accepts it.
"""
