"""``edgedl bench``: latency, start-up, memory and size of artifacts, each measured in a fresh process."""
