"""Embedding providers (imported lazily through :data:`embedline.tasks.embed.registry.PROVIDERS`)."""
