import sys

from condvae.cli import main

sys.exit(main())
