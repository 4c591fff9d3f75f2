"""The HTTP edge: routers by feature (routes/), middlewares (middleware/), reading uploads, server-sent events,
errors as JSON, and the process's lifecycle (signals, housekeeping)."""
