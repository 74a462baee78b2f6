"""pipeline stage of bingcrawl."""
