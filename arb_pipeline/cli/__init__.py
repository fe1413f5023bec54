"""The ``arb`` command line, one module per command group; ``main`` dispatches.
Nothing here imports Dagster at module level: ``arb --help`` stays fast.
"""
