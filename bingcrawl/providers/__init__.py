"""Search providers: the services a crawl can ask for images (issue 15).

Each provider turns (query, filters, result offset) into one API request and its answer into
a :class:`~bingcrawl.providers.base.ResultPage` of provider-neutral
:class:`~bingcrawl.providers.base.Hit`s plus the next offset; the sources, the API gate, the
budget and the checkpoint stay the same whichever provider answers.
"""
