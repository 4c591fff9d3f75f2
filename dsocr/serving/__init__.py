"""Sharing the model: admission, the batch scheduler, the model host that owns the model thread, metrics."""
