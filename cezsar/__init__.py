"""cezsar: zero-shot action recognition from text, from training to edge streaming.

The ``cezsar`` package holds what every stage shares and that needs no torch:
errors, atomic file writes, frame preprocessing, video decoding and the CLI.
"""

__version__ = "0.1.0"
