"""A simulated exchange venue: member sessions with sequence numbers and reconnect cooldowns,
order entry with an epoch check, random fills, open orders, fills and cancels, over REST.

It behaves like the venues a failover must cope with, including the parts that hurt: a member
that reconnects too eagerly is locked out for a while, and an order sent under an old epoch is
refused. State lives in memory; a killed venue forgets everything, as a crashed one would.
"""

from lab.venue.app import create_app
from lab.venue.config import VenueSettings

__all__ = ["VenueSettings", "create_app"]
