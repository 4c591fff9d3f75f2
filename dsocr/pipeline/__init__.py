"""From an upload to its answer: the request checked, a PDF's pages rendered in worker processes, each page read
through the page submitter, its raw text cleaned, artifacts, runs, the history and progress reports."""
