"""One router per resource: images, codes, models, health, metrics."""
