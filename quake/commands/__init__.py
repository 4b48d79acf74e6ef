"""The subcommands of ``quake`` (``quake/cli.py``), one module each: ``train``, ``classify``,
``annotate``, ``export``, ``pretrain``. Each has ``parse_args`` and ``main(argv) -> exit
status``; ``scripts/<name>.py`` call the same ``main``.

A command module imports its implementation (torch, obspy, the training and deploy modules)
inside the function that runs the command, not at its top: building the parser then imports
nothing heavy, so ``quake <command> --help`` answers at once. The choices and defaults a parser
needs come from :mod:`quake.options`."""

COMMANDS = ("train", "classify", "annotate", "export", "pretrain")
