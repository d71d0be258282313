"""vsml-es: meta-learning learning algorithms with VSML and distributed evolution strategies."""

__version__ = "0.1.0"
