"""Sources: where candidates come from, each checkpointed as rows of the ``queries`` table.

=============  =============================================  ==================================
source         API calls (all through the one ``ApiGate``)     one ``queries`` row per
=============  =============================================  ==================================
search         ``/images/search``, paged by ``nextOffset``     root query
expand         ``/images/search`` (first page of the parent    query expansion / pivot / similar
               gives the suggestions)                           term, breadth-first to a depth
similar        ``/images/details`` (``SimilarImages``)          stored image asked about
visual         ``/images/visualsearch`` (upload), paged         local seed image
trending       ``/images/trending``                             trending category
urls           none                                             URL-list file (streamed)
=============  =============================================  ==================================

:mod:`bingcrawl.sources.runner` runs them; :mod:`bingcrawl.sources.base` holds what they
share (the lazily opened API client, the paging loop, the per-row bookkeeping).
"""
