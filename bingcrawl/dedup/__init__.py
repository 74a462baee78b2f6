"""Exact and near-duplicate detection across the whole crawl."""
