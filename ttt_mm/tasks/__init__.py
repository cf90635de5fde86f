"""Entry points: ``train`` (fit, then test with ``test=true``), ``embed``, ``evaluate``,
``linear_probe`` and ``probe`` (index media files); the Hydra ones keep ``run(cfg)`` apart from their
``main`` so tests can call them with a composed config.

What they share: `common` (the config folder, its resolvers, how a command ends on a config error
or Ctrl-C), `config_errors` (the config error and its one-line messages), `composing`
(``hydra_command``: composing mistakes in one line), `overrides` (Hydra's records of the command
line, the key each override sets), `command_lines` (commands rebuilt to print), `command_keys`
(readers of shared keys), `config_types` (values checked against constructor annotations),
`run_folders` (resume folders, config records, refused runs), `held_out` (training files kept out
of held-out scoring), `job_logs` (the job's log file, Lightning's notices); training's own
`train_checks` and `resume_advice`, a sweep's `sweep_report`, and `starting` (Ctrl-C or SIGTERM
before a command's work begins, in one line)."""

from ttt_mm.tasks.starting import say_ctrl_c_while_starting

say_ctrl_c_while_starting()  # (before the commands' slow imports: `starting`)
