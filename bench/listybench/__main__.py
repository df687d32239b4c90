import sys

from listybench.main import main

if __name__ == "__main__":
    sys.exit(main())
