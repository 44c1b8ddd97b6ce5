"""nudgeml: learn an online bias correction for a GCM from nudged runs, and prove it on free runs.

One module per workflow stage (``era5``, ``regrid``, ``nudged``, ``extract``, ``shard``, ``train``,
``export``, ``coupled``, ``report``); the library never imports Snakemake.
"""

__version__ = "0.1.0"
