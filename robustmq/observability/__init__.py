"""Metrics and dashboards: what operators watch."""
