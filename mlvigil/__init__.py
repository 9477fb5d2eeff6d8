"""mlvigil: one service that watches ML training, serving and the GPUs underneath."""

__version__ = "0.1.0"
