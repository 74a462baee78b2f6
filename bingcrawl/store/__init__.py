"""store stage of bingcrawl."""
