"""Downloading images: streaming HTTP with caps, timeouts, retries and the SSRF guard."""
