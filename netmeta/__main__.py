import sys

from netmeta.cli.main import main

sys.exit(main())
