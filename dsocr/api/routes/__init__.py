"""The routers, one per feature: OCR, progress tasks, history, artifacts, probes, modes, the page at /."""
