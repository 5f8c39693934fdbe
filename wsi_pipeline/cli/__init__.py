"""The command line only: parse, call the library, print."""
