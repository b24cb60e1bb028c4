"""Demo Django site exercising the ``hacache.HACache`` backend (demo, integration, load tests)."""
