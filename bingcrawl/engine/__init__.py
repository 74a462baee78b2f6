"""The orchestrator: the Crawler, its frontier, the API gate, the source runner, crash points."""
