"""The lab's market-data consumer: `python -m lab.md_consumer --feed lab-md --nats URL ...`."""

from domain.feeds import ActiveSource, active_source_key
from lab.md_consumer.app import MarketDataConsumer, create_app

__all__ = ["ActiveSource", "MarketDataConsumer", "active_source_key", "create_app"]
