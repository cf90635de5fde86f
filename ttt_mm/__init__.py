"""ttt-mm: Test-Time Training backbones for very long audio and video sequences."""

__version__ = "0.1.0"
