"""Training side of cezsar: the contrastive model, its data, training and zero-shot evaluation."""
