"""Root conftest: registers the modeldrop plugin and the fixture modules; nothing else."""

pytest_plugins = ["modeldrop.plugin", "sandbox.pytest_plugin", "fixtures.core", "fixtures.ledger", "fixtures.exo",
                  "fixtures.bench", "fixtures.downloads"]
