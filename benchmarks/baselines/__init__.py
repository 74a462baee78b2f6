"""The baselines bingcrawl is compared with, each a child process writing a result file.

* :mod:`.seed_blog`: the seed blog post's loop (sequential requests, a one-second sleep per
  page, URL-derived file names), run on a sample.
* :mod:`.bare_aiohttp`: download-and-write with one aiohttp session and N workers, nothing
  else: the ceiling for pure download on this machine and this emulator.
* :mod:`.img2dataset_run` and :mod:`.icrawler_run`: the peers, when installed (the optional
  ``bench-peers`` extra).
"""
