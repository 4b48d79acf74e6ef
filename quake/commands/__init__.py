"""The subcommands of ``quake`` (``quake/cli.py``), one module each: ``train``, ``classify``,
``export``, ``pretrain``. Each has ``parse_args`` and ``main(argv) -> exit status``; ``scripts/<name>.py``
call the same ``main``."""

COMMANDS = ("train", "classify", "export", "pretrain")
