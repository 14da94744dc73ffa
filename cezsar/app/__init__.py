"""Applications built from several stages (above the edge and the converter): ``cezsar demo``."""
