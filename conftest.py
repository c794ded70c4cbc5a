"""Root conftest: registers the modeldrop plugin and the fixture modules; nothing else."""

pytest_plugins = ["modeldrop.plugin", "fixtures.core", "fixtures.ledger", "fixtures.exo", "fixtures.bench"]
