"""The artifact contract that training and serving share, importing neither: model cards, the
image conversion rule, out-of-distribution scores (docs/architecture.md)."""
