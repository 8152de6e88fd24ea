"""Shared fixtures: real servers on loopback, real clients."""

from __future__ import annotations
