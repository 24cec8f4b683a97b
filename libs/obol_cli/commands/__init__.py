"""One module per `obol` subcommand, each with `add_parser(commands)`."""
