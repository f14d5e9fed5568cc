"""The lab's alert receiver: a webhook that stores what the runbooks send, for people and tests."""
