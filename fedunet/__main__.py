import sys

from fedunet.cli import main

sys.exit(main())
