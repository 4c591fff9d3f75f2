"""From a checked request to its answer: the document's pages, the engine's raw text cleaned, artifacts, runs,
the history and progress reports."""
