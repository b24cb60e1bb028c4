"""URL map of the demo site (also the endpoints the locust load tests hit)."""

from django.urls import path

from hacache import health
from testproject import views

urlpatterns = [
    path("", views.home, name="home"),
    path("cached/", views.cached, name="cached"),
    path("counter/", views.counter, name="counter"),
    path("async/counter/", views.async_counter, name="async-counter"),
    path("slow/", views.slow, name="slow"),
    path("fragments/", views.fragments, name="fragments"),
    path("session/", views.session, name="session"),
    path("item/<str:key>/", views.item, name="item"),
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics, name="metrics"),
    path("healthz/", health.view, name="healthz"),  # every shard's master, for probes
    path("status/", views.status_page, name="status"),
    path("status/data/", views.status_data, name="status-data"),
]
