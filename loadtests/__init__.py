"""Locust load tests of the demo site, hacache against the other Redis cache backends."""
