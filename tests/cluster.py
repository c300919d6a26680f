"""Cluster test tools: the round-robin proxy ``demo --cluster`` uses, in front of hubs."""

from rxconn.cli._balancer import RoundRobinProxy


__all__ = ["RoundRobinProxy"]
