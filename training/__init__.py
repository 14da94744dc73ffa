"""Training side of cezsar: the contrastive model, its data, training and zero-shot evaluation."""

from cezsar.extras import requires

requires("torch", "safetensors", "sentence_transformers", "transformers", "av", extra="train")
