"""The crawl on a Ray cluster (``--engine ray``, extra ``bingcrawl[ray]``).

:mod:`bingcrawl.cluster.engine` is the driver's side (:class:`~bingcrawl.cluster.engine.
RayCrawler`), :mod:`bingcrawl.cluster.worker` what runs on the nodes. Nothing here imports Ray
until a crawl asks for it: without the extra, ``--engine ray`` fails before any request,
naming it.
"""
