"""Entry points: ``train`` (fit, then test with ``test=true``), ``embed``, ``evaluate``,
``linear_probe`` and ``probe`` (index media files); the Hydra ones keep ``run(cfg)`` apart from their
``main`` so tests can call them with a composed config."""
