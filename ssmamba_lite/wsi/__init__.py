"""Whole-slide images: slides -> tiles -> features -> multiple-instance learning.

    slide.py     reading slide files (OpenSlide, tifffile as the fallback)
    tiles.py     tissue mask (Otsu), the grid of tissue tiles, finding slide files
    features.py  a tile encoder from a checkpoint, feature extraction, the .h5 feature cache
    mil.py       MIL aggregators: ABMIL and Mamba-MIL
    train.py     slide-level training and evaluation of the aggregators
    bench.py     a constructed MIL benchmark from a labelled patch dataset
    heatmap.py   per-tile scores drawn over the slide thumbnail
"""
