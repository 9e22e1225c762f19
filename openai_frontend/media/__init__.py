"""Resolving media references (data:, http(s), file://, frame lists) and media options."""
