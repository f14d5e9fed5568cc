"""Process entry points: build clients from config and poll the task queues of one place."""
