"""bing stage of bingcrawl."""
