"""Span conventions and host-side decoding: the public home of everything a
span- or tag-based extractor shares.

Host-side functions here depend on NumPy only (no backend), so a serving
process can decode predictions without importing TensorFlow, JAX or PyTorch.
"""

__all__: list[str] = []
