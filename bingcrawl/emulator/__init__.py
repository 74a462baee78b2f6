"""emulator stage of bingcrawl."""
