"""A simulated market-data source for the lab: `python -m lab.marketdata --name md-a --port N`."""

from lab.marketdata.app import FeedMode, MarketDataFeed, Tick, create_app

__all__ = ["FeedMode", "MarketDataFeed", "Tick", "create_app"]
