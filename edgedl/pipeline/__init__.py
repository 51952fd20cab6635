"""``edgedl pipeline``: train → export → validate → bench → bundle → report, incrementally, with gates."""
