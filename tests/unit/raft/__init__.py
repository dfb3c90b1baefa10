"""Tests of the Meta Service Raft core, its durable log and the deterministic simulation."""
