"""`python -m searcher --qdrant-url URL`: the Searcher alone (the docker-compose layout)."""

import sys

from imgsearch.cli import main

sys.exit(main(["searcher", *sys.argv[1:]]))
