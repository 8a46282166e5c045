"""Embedding providers: one module each, declaring its ``SPEC`` (a ProviderSpec); listed by name in
:data:`embedline.tasks.plugins.PROVIDERS` and imported only when that name is used."""
