"""graphc: a graph-rewriting compiler that makes convolutional networks smaller and faster."""
__version__ = "0.1.0"
