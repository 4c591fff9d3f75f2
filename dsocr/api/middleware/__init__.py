"""The middlewares, one concept each: API keys, request ids, the root path, request metrics."""
