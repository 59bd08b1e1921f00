"""`python -m embedder FOLDER --qdrant-url URL`: the Embedder alone (the docker-compose layout)."""

import sys

from imgsearch.cli import main

sys.exit(main(["embedder", *sys.argv[1:]]))
