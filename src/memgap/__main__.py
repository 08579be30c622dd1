from memgap.cli.main import entry

entry()
