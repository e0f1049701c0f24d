"""Tenant plans, real-time budget and rate counters, reservations, alerts and their repair."""
