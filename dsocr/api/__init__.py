"""The HTTP edge: routes by feature, reading uploads, server-sent events, errors as JSON."""
