"""Entry points: ``train`` (fit then test), ``embed``, ``evaluate`` and ``linear_probe``; each keeps
``run(cfg)`` apart from its Hydra ``main`` so tests can call it with a composed config."""
