"""Test doubles shared by the test suite (servers, sample artifacts)."""
