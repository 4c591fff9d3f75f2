"""Durable jobs: the HTTP layer submits them to the store; workers in any process claim their pages, read them
through the page submitter and keep the results; changes reach followers on every replica."""
