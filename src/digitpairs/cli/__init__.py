"""The command line: the parser, and one function per command; nothing imports it."""
