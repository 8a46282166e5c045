"""Embedding providers (imported lazily through :data:`tasks.embed.registry.PROVIDERS`)."""
