"""The streaming core: provider adapters, normalised events, partial JSON, tools and the tool loop.

Nothing in this package imports Django.
"""
