"""The package format: a typed manifest, writing packages from a model, resolving and caching them."""
