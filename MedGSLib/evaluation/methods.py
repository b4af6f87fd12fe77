"""Method names of `medgs eval` (one owner: run, command and the CLI import them). No imports,
so `medgs eval --help` stays instant."""
INTENSITY_METHODS = ("medgs", "linear", "bspline", "lanczos", "nearest", "optflow")
LABEL_METHODS = ("nearest", "linear", "shape-linear", "shape-cubic", "contour", "medgs")
CLASSICAL_INTENSITY = tuple(m for m in INTENSITY_METHODS if m != "medgs")
CLASSICAL_LABELS = tuple(m for m in LABEL_METHODS if m != "medgs")
