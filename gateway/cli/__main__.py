"""Running the package as a module: the same as the `mcp-gateway` command."""

import sys

from gateway.cli.commands import main

main(sys.argv[1:])
